"""`bitjax rephrase`: provenance, quality gates and the side file, resume after an interruption, settings
checks and bad input (a stand-in generator)."""

import json

import pytest

from bitjax.cli import main
from bitjax.errors import ConfigError
from bitjax.teachers import rephrase

# Two kinds of document: the stand-in generator rephrases ANTONIO passages faithfully and answers PORTIA
# passages with chat boilerplate, so half the candidates pass the gates and half are rejected.
ANTONIO = "ANTONIO.\nI will lend Bassanio three thousand ducats for three months.\n\nSHYLOCK.\nThen seal the bond."
PORTIA = "PORTIA.\nThe quality of mercy is not strained; it droppeth as the gentle rain from heaven."
GOOD = ("Antonio promises to lend Bassanio three thousand ducats, to be repaid after three months, and Shylock "
        "asks him to seal the bond.")
JUNK = "I'm happy to help! As an AI, here is a fun story about a friendly dragon who loves the rain."


class StandInGenerator:
    name = "stand-in"

    def __init__(self, empty=False):
        self.calls, self.empty = 0, empty

    def __call__(self, prompt, settings, seed):
        self.calls += 1
        if self.empty:
            return ""
        return GOOD if "ANTONIO" in prompt else JUNK


@pytest.fixture
def source(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"id": f"d{i}", "text": ANTONIO if i % 2 == 0 else PORTIA}) + "\n"
                            for i in range(4)))
    return f"jsonl:{path}"


def run(source, out, monkeypatch, gen, **kw):
    monkeypatch.setattr(rephrase, "make_generator", lambda *a: gen)
    return rephrase.rephrase(source, out, formats=list(rephrase.DEFAULT_FORMATS), progress=False, **kw)


def read(path):
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_records_carry_provenance_and_gate_scores(tmp_path, source, monkeypatch):
    out = tmp_path / "out.jsonl"
    summary = run(source, out, monkeypatch, StandInGenerator(), limit=2)
    assert (summary["generated"], summary["written"], summary["rejected"]) == (6, 3, 3)
    assert summary["failed_by_gate"]["boilerplate"] == 3
    kept, rejected = read(out), read(tmp_path / "out.rejected.jsonl")
    assert {r["source_id"] for r in kept} == {"d0"} and {r["source_id"] for r in rejected} == {"d1"}
    r = kept[0]
    assert r["source"] == source and r["generator"] == "stand-in" and r["settings"]["max_new_tokens"] == 128
    assert r["id"] == f"{r['source_id']}#{r['format']}" and len(r["prompt_sha256"]) == 16
    assert r["passage"] == ANTONIO and r["gates"]["failed"] == []
    assert set(r["gates"]["scores"]) == {"faithfulness", "entities", "novelty", "length_ratio", "repetition",
                                         "boilerplate", "language"}
    assert r["settings"]["gates"]["min_faithfulness"] == rephrase.rephrase_gates.Thresholds().min_faithfulness
    assert all("boilerplate" in x["gates"]["failed"] and x["text"] == JUNK for x in rejected)


def test_nothing_is_lost_and_resume_skips_kept_and_rejected_pairs(tmp_path, source, monkeypatch):
    out, side = tmp_path / "out.jsonl", tmp_path / "out.rejected.jsonl"
    run(source, out, monkeypatch, StandInGenerator(), limit=2)
    first_kept, first_rejected = out.read_text().splitlines(), side.read_text().splitlines()
    # interrupted mid-line in the side file: the torn line is dropped, the complete ones are kept
    with side.open("a") as f:
        f.write('{"id": "d3#qa", "text": "torn')
    gen = StandInGenerator()
    summary = run(source, out, monkeypatch, gen)
    assert summary["already_done"] == 6 and summary["generated"] == 6 and gen.calls == 6
    kept, rejected = read(out), read(side)
    pairs = [(r["source_id"], r["format"]) for r in kept + rejected]
    assert len(pairs) == len(set(pairs)) == 4 * 3          # kept + rejected = generated, no pair twice
    assert out.read_text().splitlines()[:3] == first_kept and side.read_text().splitlines()[:3] == first_rejected
    assert run(source, out, monkeypatch, StandInGenerator())["generated"] == 0


def test_without_gates_every_nonempty_line_is_kept_and_empty_ones_are_rejected(tmp_path, source, monkeypatch):
    out = tmp_path / "out.jsonl"
    summary = run(source, out, monkeypatch, StandInGenerator(), limit=2, thresholds=None)
    assert summary["written"] == 6 and read(out)[3]["gates"]["scores"]["boilerplate"] >= 1
    assert read(out)[0]["settings"]["gates"] is None
    empty_out = tmp_path / "empty.jsonl"
    summary = run(source, empty_out, monkeypatch, StandInGenerator(empty=True), limit=1, thresholds=None)
    assert summary["rejected"] == 3 and summary["failed_by_gate"] == {"empty": 3}
    assert not read(empty_out) and len(read(tmp_path / "empty.rejected.jsonl")) == 3


def test_resume_with_other_thresholds_is_refused(tmp_path, source, monkeypatch):
    out = tmp_path / "out.jsonl"
    run(source, out, monkeypatch, StandInGenerator(), limit=1)
    with pytest.raises(ConfigError, match="written with settings"):
        run(source, out, monkeypatch, StandInGenerator(),
            thresholds=rephrase.rephrase_gates.Thresholds(min_faithfulness=0.9))


def test_same_pair_gets_the_same_seed_wherever_a_run_stopped():
    assert rephrase.pair_seed(0, "d1", "qa") == rephrase.pair_seed(0, "d1", "qa")
    assert rephrase.pair_seed(0, "d1", "qa") != rephrase.pair_seed(0, "d1", "summary")


def test_resume_with_other_settings_is_refused(tmp_path, source, monkeypatch):
    out = tmp_path / "out.jsonl"
    run(source, out, monkeypatch, StandInGenerator(), limit=1)
    with pytest.raises(ConfigError, match="written with settings"):
        run(source, out, monkeypatch, StandInGenerator(), settings=rephrase.Settings(temperature=0.1))


def test_unknown_format_and_generator_are_config_errors(tmp_path, source):
    with pytest.raises(ConfigError, match="no prompt for format 'poem'"):
        rephrase.load_prompts(["poem"])
    with pytest.raises(ConfigError, match="--generator"):
        rephrase.make_generator(str(tmp_path / "missing.bin"), rephrase.Settings(), 1)


def test_every_shipped_prompt_has_a_worked_example_and_repeats_the_passage():
    prompts = rephrase.load_prompts(list(rephrase.DEFAULT_FORMATS))
    for name, p in prompts.items():
        assert p.count("{text}") == 2 and "Example passage:" in p and "at most" in p, name
        assert p.rindex("{text}") > p.index("Example passage:"), name     # the passage again, after the example


# --------------------------------------------------------------------------- bad input at the command line


def cli_error(capfd, *args):
    code = main(["rephrase", "--no-progress", *args])
    err = capfd.readouterr().err.strip()
    return code, err


@pytest.mark.parametrize("option,value", [("--min-faithfulness", "1.5"), ("--max-repetition", "-0.1"),
                                          ("--min-novelty", "2"), ("--max-boilerplate", "-1")])
def test_out_of_range_threshold_is_one_line(capfd, tmp_path, source, option, value):
    code, err = cli_error(capfd, "--source", source, "--out", str(tmp_path / "o.jsonl"), option, value)
    shown = float(value) if option != "--max-boilerplate" else value
    assert code == 2 and len(err.splitlines()) == 1 and f"{option} {shown}" in err


def test_length_ratio_bounds_in_the_wrong_order_are_one_line(capfd, tmp_path, source):
    code, err = cli_error(capfd, "--source", source, "--out", str(tmp_path / "o.jsonl"),
                          "--min-length-ratio", "3", "--max-length-ratio", "2")
    assert code == 2 and len(err.splitlines()) == 1 and "--min-length-ratio 3.0" in err


def test_prompt_without_placeholder_is_one_line(capfd, tmp_path, source):
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / "qa.txt").write_text("Write questions about the passage.\n")
    code, err = cli_error(capfd, "--source", source, "--out", str(tmp_path / "o.jsonl"), "--formats", "qa",
                          "--prompts", str(prompts))
    assert code == 2 and len(err.splitlines()) == 1 and str(prompts / "qa.txt") in err and "{text}" in err


@pytest.mark.parametrize("name,content", [("missing.gguf", None), ("weights.bin", b"\0" * 64),
                                          ("garbage.gguf", b"not a gguf file at all")])
def test_generator_that_is_missing_or_not_a_chat_model_is_one_line(capfd, tmp_path, source, name, content):
    if name == "garbage.gguf":
        pytest.importorskip("llama_cpp")
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    code, err = cli_error(capfd, "--source", source, "--out", str(tmp_path / "o.jsonl"), "--limit", "1",
                          "--generator", str(path))
    assert code == 2 and len(err.splitlines()) == 1 and str(path) in err, err


@pytest.mark.slow
def test_embedded_generator_rephrases_one_passage(tmp_path, source):
    pytest.importorskip("llama_cpp")
    out = tmp_path / "out.jsonl"
    rephrase.rephrase(source, out, formats=["summary"], limit=1, progress=False,
                      settings=rephrase.Settings(max_new_tokens=16))
    record = json.loads(out.read_text())
    assert record["generator"].startswith("llama.cpp:SmolLM2") and record["text"]
