"""Teacher traces: answer extraction, the held-out split, sampling and labelling, checked reading, pairing,
and the trace sources of the data pipeline (SFT rows and REDI pair rows)."""

import json

import numpy as np
import pytest

from bitjax import tokenizer as tokenizer_lib
from bitjax.config import DataConfig, SourceConfig
from bitjax.data import build_pipeline
from bitjax.data.teacher_files import traces as traces_file
from bitjax.errors import ConfigError
from bitjax.losses.objectives import OBJECTIVES
from bitjax.teachers import trace_sampler
from bitjax.teachers.chat_models import Completion


@pytest.mark.parametrize("text, want", [
    ("3 + 4 = 7 apples.\n#### 7", "7"),
    ("The answer is 1,250 apples, not 12.", "1250"),
    ("so \\boxed{42} and then 13", "42"),
    ("He pays $12.50 in total.", "12.5"),
    ("She is left with -3", "-3"),
    ("first 12, then 15.", "15"),
    ("no number at all", None),
])
def test_final_answer_extraction(text, want):
    assert traces_file.extract_answer(text) == want


def test_answers_compare_as_numbers():
    assert traces_file.is_correct("28080", "28080") and traces_file.is_correct("28080.0", "28080")
    assert not traces_file.is_correct("2808", "28080") and not traces_file.is_correct(None, "3")


def test_heldout_prompts_share_no_template_with_training_prompts():
    train = trace_sampler.task_prompts("gsm_symbolic", "train", 40)
    heldout = trace_sampler.task_prompts("gsm_symbolic", "heldout", 20)
    assert len(train) == 40 and len(heldout) == 20
    assert all(p["template"] % trace_sampler.HELDOUT_TEMPLATE_EVERY == 0 for p in heldout)
    assert not {p["template"] for p in train} & {p["template"] for p in heldout}
    assert not {p["question"] for p in train} & {p["question"] for p in heldout}
    assert trace_sampler.task_prompts("gsm_symbolic", "train", 40) == train     # deterministic
    assert all(traces_file.parse_number(p["gold"]) is not None for p in train + heldout)


class ScriptedTeacher:
    """Answers correctly on even sample seeds' parity, otherwise off by one; counts its calls."""

    name = "scripted"

    def __init__(self, prompts):
        self.gold = {p["question"]: p["gold"] for p in prompts}
        self.calls = 0

    def render(self, messages):
        return f"<user>{messages[0]['content']}</user><assistant>"

    def complete(self, prompt, *, max_new_tokens, temperature, top_p, seed):
        self.calls += 1
        gold = int(self.gold[prompt[len("<user>"):-len("</user><assistant>")]])
        answer = gold if seed % 2 == 0 else gold + 1
        return Completion(f"Let me think. 2 + 2 = 4.\n#### {answer}", "stop", 12)


@pytest.fixture
def prompts():
    return trace_sampler.task_prompts("gsm_symbolic", "train", 6)


def test_sampling_labels_by_the_verified_answer_and_resumes(tmp_path, prompts):
    out = tmp_path / "trace_sampler.jsonl"
    teacher = ScriptedTeacher(prompts)
    summary = trace_sampler.sample_traces(teacher, prompts[:3], out, split="train", samples=4, progress=False)
    assert summary["written"] == 12
    records = traces_file.read_traces(out)
    for r in records:
        seed = trace_sampler.sample_seed(0, r["prompt_id"], r["sample"])
        assert r["label"] == ("positive" if seed % 2 == 0 else "negative")
        assert r["prompt"] == teacher.render([{"role": "user", "content": r["question"]}])
        assert r["teacher"] == "scripted" and r["settings"]["max_new_tokens"] == 192
    # a run killed mid-line: the torn line goes, complete ones stay, only the missing samples are drawn
    with out.open("a") as f:
        f.write('{"id": "torn')
    again = ScriptedTeacher(prompts)
    summary = trace_sampler.sample_traces(again, prompts, out, split="train", samples=4, progress=False)
    assert summary["already_done"] == 12 and summary["written"] == 12 and again.calls == 12
    assert len(traces_file.read_traces(out)) == 24


def test_resume_with_other_settings_is_refused(tmp_path, prompts):
    out = tmp_path / "trace_sampler.jsonl"
    trace_sampler.sample_traces(ScriptedTeacher(prompts), prompts[:1], out, split="train", samples=1, progress=False)
    with pytest.raises(trace_sampler.ConfigError, match="written with settings"):
        trace_sampler.sample_traces(ScriptedTeacher(prompts), prompts[:1], out, split="train", samples=2,
                                    progress=False, settings=trace_sampler.SamplingSettings(temperature=1.0))


def record(prompt_id, completion, gold, label, **kw):
    return {"id": f"{prompt_id}#{kw.get('sample', 0)}", "prompt_id": prompt_id, "prompt": f"Q{prompt_id}? ",
            "completion": completion, "gold": gold, "label": label, **kw}


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.mark.parametrize("bad, match", [
    (record("p", "#### 4", "four", "negative"), r"trace_sampler.jsonl:2: the gold answer 'four' is not a number"),
    (record("p", "#### 5", "4", "positive"), r"trace_sampler.jsonl:2: labelled positive but .* '5' against gold '4'"),
    (record("p", "#### 4", "4", "maybe"), r"trace_sampler.jsonl:2: label 'maybe'"),
    ({"prompt_id": "p"}, r"trace_sampler.jsonl:2: missing field\(s\) prompt, completion, gold, label"),
])
def test_bad_trace_records_are_named_by_file_and_line(tmp_path, bad, match):
    path = write_jsonl(tmp_path / "trace_sampler.jsonl", [record("a", "so #### 3", "3", "positive"), bad])
    with pytest.raises(traces_file.TraceError, match=match):
        traces_file.read_traces(path)


@pytest.mark.parametrize("line", ["{not json", "[" * 100_000 + "]" * 100_000, '{"n": ' + "9" * 5000 + "}"],
                         ids=["not-json", "nested-too-deep", "enormous-number"])
def test_unparsable_json_line(tmp_path, line):
    path = tmp_path / "trace_sampler.jsonl"
    path.write_text(json.dumps(record("a", "#### 3", "3", "positive")) + f"\n{line}\n")
    with pytest.raises(traces_file.TraceError, match=r"trace_sampler.jsonl:2: not a usable JSON line"):
        traces_file.read_traces(path)


def test_redi_pairs_each_positive_with_a_negative_of_its_own_prompt():
    records = [record("a", "#### 1", "1", "positive", sample=0), record("a", "#### 2", "1", "negative", sample=1),
               record("a", "#### 1", "1", "positive", sample=2), record("b", "#### 9", "1", "negative"),
               record("c", "#### 5", "5", "positive"), record("d", "#### 7", "8", "negative", sample=0),
               record("d", "#### 8", "8", "positive", sample=1)]
    pos, neg = traces_file.redi_pairs(records)
    assert [p["id"] for p in pos] == ["a#0", "a#2", "d#1"]
    assert [n["id"] for n in neg] == ["a#1", "a#1", "d#0"]     # b has no positive, c no negative
    assert all(p["prompt"] == n["prompt"] for p, n in zip(pos, neg))
    assert [d["id"] for d in traces_file.sft_documents(records)] == ["a#0", "a#2", "c#0", "d#1"]


# --------------------------------------------------------------------------- trace sources in the pipeline

@pytest.fixture
def trace_file(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for p in range(6):
        for s in range(3):
            gold = str(10 + p)
            answer = gold if s == 0 else str(20 + s)
            words = " ".join(rng.choice(["add", "then", "apples", "so", "each"], size=5 + 3 * s))
            rows.append(record(f"q{p}", f"{words} #### {answer}", gold, "positive" if s == 0 else "negative",
                               sample=s))
    return write_jsonl(tmp_path / "trace_sampler.jsonl", rows)


def trace_config(trace_file, objective, **kw):
    srcs = (SourceConfig("natural", "tfds:shakespeare", 0.5),
            SourceConfig("traces", f"traces:{trace_file}", 0.5, objective=objective))
    return DataConfig(**{"sources": srcs, "vocab_size": 512, "seq_len": 64, "batch_size": 8, **kw})


def trace_rows(trace_file, objective):
    """The trace source's rows among the first 6 batches, the pipeline and its tokenizer."""
    pipeline = build_pipeline(trace_config(trace_file, objective))
    it = pipeline.train_iterator()
    rows = [r for b in (next(it) for _ in range(6)) for r in _rows(b) if r["source_id"] == 1]
    assert rows
    return rows, pipeline, tokenizer_lib.load(pipeline.tokenizer_path)


def test_sft_rows_train_on_positive_completions_only(trace_file):
    rows, _, tok = trace_rows(trace_file, "sft")
    for row in rows:
        for seg in set(row["segment_ids"]) - {0}:
            where = row["segment_ids"] == seg
            trained = tok.decode(row["targets"][where & (row["loss_mask"] == 1)].tolist())
            prompt = tok.decode(row["targets"][where & (row["loss_mask"] == 0)].tolist())
            assert "####" in trained and "?" not in trained     # the completion, not the prompt
            assert prompt.startswith("Q") or prompt == ""        # prompt tokens are input only
            answer = traces_file.extract_answer(trained.replace(tokenizer_lib.EOS, ""))
            assert answer is not None and int(answer) < 20       # positives only


def test_redi_rows_hold_a_positive_and_a_negative_of_one_prompt(trace_file):
    rows, pipeline, tok = trace_rows(trace_file, "redi")
    for row in rows:
        assert set(row["segment_ids"]) <= {0, 1, 2}
        texts = {}
        for seg in (1, 2):
            where = row["segment_ids"] == seg
            assert row["positions"][where][0] == 0 and row["inputs"][where][0] == pipeline.boundary_id
            texts[seg] = (tok.decode(row["inputs"][where & (row["loss_mask"] == 0)].tolist()),
                          tok.decode(row["targets"][where & (row["loss_mask"] == 1)].tolist()))
        assert texts[1][0] == texts[2][0]                                   # the same prompt
        pos, neg = (traces_file.extract_answer(texts[s][1].replace(tokenizer_lib.EOS, "")) for s in (1, 2))
        assert int(pos) < 20 <= int(neg)


def test_redi_pairs_longer_than_a_row_are_refused_with_the_fix(trace_file):
    with pytest.raises(trace_sampler.ConfigError, match="none of its .* REDI pairs fits in data.seq_len=8"):
        build_pipeline(trace_config(trace_file, "redi", seq_len=8))


def test_a_text_objective_on_traces_is_a_config_error(trace_file):
    on_traces = ", ".join(name for name, o in OBJECTIVES.items() if o.reads == "traces")   # sft, redi, ...
    with pytest.raises(ConfigError, match=f"holds traces: its objective must be one of {on_traces}, not 'kd'"):
        SourceConfig("t", f"traces:{trace_file}", objective="kd")
    with pytest.raises(ConfigError, match="holds text: its objective must be one of ce, kd, not 'redi'"):
        SourceConfig("t", "tfds:shakespeare", objective="redi")


def _rows(batch):
    return [{k: v[i] for k, v in batch.items()} for i in range(len(batch["inputs"]))]


def test_training_on_a_bad_trace_file_is_a_one_line_error(tmp_path, capsys):
    from bitjax.cli import main
    bad = write_jsonl(tmp_path / "bad.jsonl", [record("a", "so #### 3", "three", "negative")])
    recipe = tmp_path / "recipe.py"
    recipe.write_text(
        "from bitjax.config import DataConfig, SourceConfig, TrainConfig\n"
        "def get_config():\n"
        "    return TrainConfig(data=DataConfig(sources=(SourceConfig('natural', 'tfds:shakespeare'),\n"
        f"        SourceConfig('t', 'traces:{bad}', objective='sft')), vocab_size=512, seq_len=32, batch_size=4))\n")
    assert main(["train", str(recipe), "--workdir", str(tmp_path / "run"), "--no-progress"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("bitjax: error")]
    assert len(err) == 1 and "bad.jsonl:1: the gold answer 'three' is not a number" in err[0]
    assert not (tmp_path / "run" / "checkpoints").exists()
