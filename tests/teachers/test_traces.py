"""Teacher traces: sampling a task's problems in batches and labelling them by the task's verifier, resuming,
checked reading, pairing, and the trace sources of the data pipeline (SFT rows and REDI pair rows)."""

import json

import numpy as np
import pytest

from bitjax import tokenizer as tokenizer_lib
from bitjax.config import DataConfig, SourceConfig
from bitjax.data import build_pipeline
from bitjax.data.teacher_files import traces as traces_file
from bitjax.errors import ConfigError
from bitjax.losses.objectives import OBJECTIVES
from bitjax.run.chat import Completion
from bitjax.tasks import problems, spec
from bitjax.tasks import prompts as task_prompts
from bitjax.teachers import trace_sampler

TASK = spec.parse("chain_sum:min_terms=2,max_terms=3")


class ScriptedTeacher:
    """Answers correctly on even sample seeds, otherwise off by one; counts its calls and its batches."""

    name = "scripted"

    def __init__(self, problems, batch_size=1):
        self.gold = {task_prompts.user_message(p): p.gold for p in problems}
        self.calls, self.batches, self.batch_size = 0, [], batch_size

    def render(self, messages):
        return f"<user>{messages[0]['content']}</user><assistant>"

    def complete_many(self, prompts, *, max_new_tokens, temperature, top_p, seeds, on_batch=None):
        self.batches.append(len(prompts))
        out = []
        for prompt, seed in zip(prompts, seeds):
            self.calls += 1
            gold = int(self.gold[prompt[len("<user>"):-len("</user><assistant>")]])
            answer = gold if seed % 2 == 0 else gold + 1
            out.append(Completion(f"Let me think. 2 + 2 = 4.\nAnswer: {answer}", "stop", 12))
        if on_batch is not None:
            on_batch(len(prompts), 12 * len(prompts))
        return out


@pytest.fixture
def train_problems():
    return problems.problems(TASK, "train", 6)


@pytest.mark.parametrize("batch_size", [1, 5])
def test_sampling_labels_by_the_tasks_verifier_and_resumes(tmp_path, train_problems, batch_size):
    out = tmp_path / "trace_sampler.jsonl"
    teacher = ScriptedTeacher(train_problems, batch_size)
    summary = trace_sampler.sample_traces(teacher, TASK, train_problems[:3], out, split="train", samples=4,
                                          progress=False)
    assert summary["written"] == 12 and summary["tokens"] == 144
    assert max(teacher.batches) == batch_size   # a bitjax teacher decodes `batch_size` rows per call
    records = traces_file.read_traces(out)
    for r in records:
        seed = problems.sample_seed(0, r["prompt_id"], r["sample"])
        assert r["label"] == ("positive" if seed % 2 == 0 else "negative")
        assert r["answer"] == r["completion"].rpartition("Answer: ")[2]
        assert r["task"] == str(TASK) and r["entry"]["answer"] == r["gold"]
        assert r["prompt"] == teacher.render([{"role": "user", "content": r["question"] + "\n" +
                                               task_prompts.INSTRUCTION}])
        assert r["teacher"] == "scripted" and r["settings"]["max_new_tokens"] == 192
    # a run killed mid-line: the torn line goes, complete ones stay, only the missing samples are drawn
    with out.open("a") as f:
        f.write('{"id": "torn')
    again = ScriptedTeacher(train_problems, batch_size)
    summary = trace_sampler.sample_traces(again, TASK, train_problems, out, split="train", samples=4,
                                          progress=False)
    assert summary["already_done"] == 12 and summary["written"] == 12 and again.calls == 12
    assert len(traces_file.read_traces(out)) == 24


def test_resume_with_other_settings_or_another_task_is_refused(tmp_path, train_problems):
    out = tmp_path / "trace_sampler.jsonl"
    trace_sampler.sample_traces(ScriptedTeacher(train_problems), TASK, train_problems[:1], out, split="train",
                                samples=1, progress=False)
    with pytest.raises(ConfigError, match="written with settings"):
        trace_sampler.sample_traces(ScriptedTeacher(train_problems), TASK, train_problems[:1], out, split="train",
                                    samples=2, progress=False,
                                    settings=trace_sampler.SamplingSettings(temperature=1.0))
    other = spec.parse("chain_sum:min_terms=2,max_terms=4")
    with pytest.raises(ConfigError, match="holds traces of --task chain_sum:min_terms=2,max_terms=3"):
        trace_sampler.sample_traces(ScriptedTeacher(train_problems), other, train_problems[:1], out,
                                    split="train", samples=2, progress=False)


def record(prompt_id, completion, gold, label, **kw):
    return {"id": f"{prompt_id}#{kw.get('sample', 0)}", "prompt_id": prompt_id, "prompt": f"Q{prompt_id}? ",
            "completion": completion, "gold": gold, "label": label, **kw}


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.mark.parametrize("bad, match", [
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
            assert _stated(trained) < 20                         # positives only


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
        assert _stated(texts[1][1]) < 20 <= _stated(texts[2][1])


def test_redi_pairs_longer_than_a_row_are_refused_with_the_fix(trace_file):
    with pytest.raises(ConfigError, match="none of its .* REDI pairs fits in data.seq_len=8"):
        build_pipeline(trace_config(trace_file, "redi", seq_len=8))


def test_a_text_objective_on_traces_is_a_config_error(trace_file):
    on_traces = ", ".join(name for name, o in OBJECTIVES.items() if o.reads == "traces")   # sft, redi, ...
    with pytest.raises(ConfigError, match=f"holds traces: its objective must be one of {on_traces}, not 'kd'"):
        SourceConfig("t", f"traces:{trace_file}", objective="kd")
    with pytest.raises(ConfigError, match="holds text: its objective must be one of ce, kd, not 'redi'"):
        SourceConfig("t", "tfds:shakespeare", objective="redi")


def _stated(completion: str) -> int:
    """The number after the fixture's `####`."""
    return int(completion.replace(tokenizer_lib.EOS, "").rpartition("####")[2])


def _rows(batch):
    return [{k: v[i] for k, v in batch.items()} for i in range(len(batch["inputs"]))]


def test_training_on_a_bad_trace_file_is_a_one_line_error(tmp_path, capsys):
    from bitjax.cli import main
    bad = write_jsonl(tmp_path / "bad.jsonl", [record("a", "so #### 3", "3", "maybe")])
    recipe = tmp_path / "recipe.py"
    recipe.write_text(
        "from bitjax.config import DataConfig, SourceConfig, TrainConfig\n"
        "def get_config():\n"
        "    return TrainConfig(data=DataConfig(sources=(SourceConfig('natural', 'tfds:shakespeare'),\n"
        f"        SourceConfig('t', 'traces:{bad}', objective='sft')), vocab_size=512, seq_len=32, batch_size=4))\n")
    assert main(["train", str(recipe), "--workdir", str(tmp_path / "run"), "--no-progress"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("bitjax: error")]
    assert len(err) == 1 and "bad.jsonl:1: label 'maybe' must be 'positive' or 'negative'" in err[0]
    assert not (tmp_path / "run" / "checkpoints").exists()
