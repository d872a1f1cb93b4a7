"""`bitjax traces --teacher bitjax:RUN`: a trained run samples traces in batches in JAX. A trace does not depend on
the batch it was drawn in nor on the devices: greedy and sampled records are identical with one row per call,
four rows per call and eight rows split over eight simulated devices."""

import dataclasses
import json
import os
import subprocess
import sys

import pytest

from bitjax.cli import main
from bitjax.config import SourceConfig, apply_overrides, load_recipe
from bitjax.training import train
from tests.support import ROOT, TINY

TASK = "chain_sum:min_terms=2,max_terms=3"


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("jax_teacher")
    cfg = apply_overrides(load_recipe(TINY), ["model.n_layers=1", "data.seq_len=32", "data.batch_size=4",
                                              "steps=2", "eval_every=1000", "eval_batches=1"])
    train(cfg, workdir, progress=False)
    return workdir


def _args(teacher, out, temperature, batch):
    return ["traces", "--out", str(out), "--teacher", f"bitjax:{teacher}", "--task", TASK, "--prompts", "3",
            "--samples", "2", "--max-new-tokens", "6", "--temperature", str(temperature), "--batch", str(batch),
            "--no-progress"]


def _records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_traces_are_the_same_whatever_the_batch_and_the_devices(teacher, tmp_path, temperature, capsys):
    one, four, eight = tmp_path / "one.jsonl", tmp_path / "four.jsonl", tmp_path / "eight.jsonl"
    assert main(_args(teacher, one, temperature, 1)) == 0
    printed = capsys.readouterr().out
    summary = json.loads(printed[printed.index("{"):])
    assert summary["written"] == 6 and summary["tokens"] > 0 and summary["tokens_per_second"] > 0
    assert main(_args(teacher, four, temperature, 4)) == 0
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT),
               XLA_FLAGS="--xla_force_host_platform_device_count=8")
    done = subprocess.run([sys.executable, "-m", "bitjax.cli", *_args(teacher, eight, temperature, 8)], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    reference = _records(one)
    assert len(reference) == 6 and {r["teacher"] for r in reference} == {f"bitjax:{teacher.name}"}
    assert all(r["task"] == TASK and r["prompt"].startswith("user: ") for r in reference)
    assert _records(four) == reference
    assert _records(eight) == reference


def test_a_student_trains_on_a_bitjax_teachers_traces_and_is_evaluated_on_the_task(teacher, tmp_path, capsys):
    """The reasoning pipeline in miniature: a run's traces, a student trained on them alone (no held-out text,
    so eval reports accuracy without perplexity), its accuracy measured in training and by `bitjax eval`."""
    traces = tmp_path / "traces.jsonl"
    assert main(_args(teacher, traces, 1.0, 8)) == 0
    records = _records(traces)
    for r in records:   # positives whatever the untrained teacher wrote: SFT needs some
        r["label"] = "positive"
    traces.write_text("".join(json.dumps(r) + "\n" for r in records))
    cfg = apply_overrides(load_recipe(TINY), ["model.n_layers=1", "data.seq_len=64", "data.batch_size=2", "steps=2",
                                              "eval_every=2", "eval_batches=1", f"eval_task={TASK}",
                                              "eval_problems=2", "eval_max_new_tokens=4",
                                              f"data.tokenizer={teacher / 'tokenizer.json'}"])
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(
        cfg.data, sources=(SourceConfig("sft", f"traces:{traces}", objective="sft"),)))
    student = tmp_path / "student"
    summary = train(cfg, student, progress=False)
    assert 0 <= summary["heldout_accuracy"] <= 1
    capsys.readouterr()
    assert main(["eval", str(student)]) == 0
    out = capsys.readouterr().out
    assert [line.split() for line in out.splitlines() if "heldout_tokens" in line] == [["heldout_tokens", "0"]]
    assert "pass@1" in out
