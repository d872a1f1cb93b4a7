"""`bitjax rephrase`: provenance, resume after an interruption, settings checks (a stand-in generator)."""

import json

import pytest

from bitjax.config import ConfigError
from bitjax.teachers import rephrase


class EchoGenerator:
    name = "echo"

    def __init__(self):
        self.calls = 0

    def __call__(self, prompt, settings, seed):
        self.calls += 1
        return f"rephrased ({seed}): " + prompt[-40:]


@pytest.fixture
def source(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"id": f"d{i}", "text": f"Passage {i}.\n\nMore text {i}."}) + "\n"
                            for i in range(4)))
    return f"jsonl:{path}"


def run(source, out, monkeypatch, gen, **kw):
    monkeypatch.setattr(rephrase, "make_generator", lambda *a: gen)
    return rephrase.rephrase(source, out, formats=list(rephrase.DEFAULT_FORMATS), progress=False, **kw)


def test_records_carry_provenance_and_resume_skips_done_pairs(tmp_path, source, monkeypatch):
    out = tmp_path / "out.jsonl"
    gen = EchoGenerator()
    assert run(source, out, monkeypatch, gen, limit=2)["written"] == 6
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert {(r["source_id"], r["format"]) for r in records} == {(f"d{i}", f) for i in range(2)
                                                                for f in ("qa", "textbook", "summary")}
    r = records[0]
    assert r["source"] == source and r["generator"] == "echo" and r["settings"]["max_new_tokens"] == 128
    assert r["id"] == f"{r['source_id']}#{r['format']}" and len(r["prompt_sha256"]) == 16
    # interrupted mid-line: the torn line is dropped, the complete ones are kept, the rest is generated
    with out.open("a") as f:
        f.write('{"id": "d2#qa", "text": "torn')
    summary = run(source, out, monkeypatch, EchoGenerator())
    assert summary["already_done"] == 6 and summary["written"] == 6
    lines = out.read_text().splitlines()
    assert len(lines) == 12 and all(json.loads(line) for line in lines)
    assert lines[:6] == [json.dumps(x, ensure_ascii=False) for x in records]


def test_same_pair_gets_the_same_seed_wherever_a_run_stopped():
    assert rephrase.pair_seed(0, "d1", "qa") == rephrase.pair_seed(0, "d1", "qa")
    assert rephrase.pair_seed(0, "d1", "qa") != rephrase.pair_seed(0, "d1", "summary")


def test_resume_with_other_settings_is_refused(tmp_path, source, monkeypatch):
    out = tmp_path / "out.jsonl"
    run(source, out, monkeypatch, EchoGenerator(), limit=1)
    with pytest.raises(ConfigError, match="written with settings"):
        run(source, out, monkeypatch, EchoGenerator(), settings=rephrase.Settings(temperature=0.1))


def test_unknown_format_and_generator_are_config_errors(tmp_path, source):
    with pytest.raises(ConfigError, match="no prompt for format 'poem'"):
        rephrase.load_prompts(["poem"])
    with pytest.raises(ConfigError, match="--generator"):
        rephrase.make_generator(str(tmp_path / "missing.bin"), rephrase.Settings(), 1)


def test_every_shipped_prompt_has_a_placeholder():
    prompts = rephrase.load_prompts(list(rephrase.DEFAULT_FORMATS))
    assert all("{text}" in p for p in prompts.values())


@pytest.mark.slow
def test_embedded_generator_rephrases_one_passage(tmp_path, source):
    pytest.importorskip("llama_cpp")
    out = tmp_path / "out.jsonl"
    rephrase.rephrase(source, out, formats=["summary"], limit=1, progress=False,
                      settings=rephrase.Settings(max_new_tokens=16))
    record = json.loads(out.read_text())
    assert record["generator"].startswith("llama.cpp:SmolLM2") and record["text"]
