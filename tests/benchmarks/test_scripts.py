"""Every script under benchmarks/ and export/ runs to its end at the smallest settings, so none can rot unseen.

These check that the scripts work, not their figures (those are measured by running them in full).
"""

import os
import subprocess
import sys

import pytest

from tests.support import KD_TINY, ROOT


def _run(*args: str, timeout: int = 600) -> str:
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=timeout)
    assert out.returncode == 0, f"{args}:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
    return out.stdout


def test_step_time_benchmark_runs():
    out = _run("-m", "benchmarks.step_time", "--rounds", "1", "--steps-per-round", "1",
               "--set", "model.n_layers=1", "--set", "data.seq_len=32", "--set", "data.batch_size=2")
    assert "ratio" in out.lower()


def test_pipeline_benchmark_runs():
    out = _run("-m", "benchmarks.pipeline", "--batches", "2", "--train-steps", "1", "--stream-docs", "40",
               "--read-threads", "1", "--rounds", "1", "--rss-docs", "30")
    assert "pipeline/consumption" in out and "streamed Parquet" in out and "peak RSS" in out


def test_cache_switch_benchmark_runs():
    out = _run("-m", "benchmarks.cache_switch", "--recipe", KD_TINY,
               "--sequences", "2", "--repeats", "1")
    assert "natural" in out and "ms of packing per step" in out


def test_distill_benchmark_runs():
    out = _run("-m", "benchmarks.distill", "--rounds", "1", "--steps-per-round", "1", "--set", "model.n_layers=1",
               "--set", "data.seq_len=64", "--set", "data.batch_size=2")
    assert "KD" in out


def test_distill_results_benchmark_runs(tmp_path):
    pytest.importorskip("llama_cpp")
    out = _run("-m", "benchmarks.distill_results", "--only", "cd", "--batches", "1", "--out", str(tmp_path / "r"),
               "--set", "steps=2", "--set", "data.seq_len=128", "--set", "data.batch_size=2",
               "--set", "distill.cache_examples=2", "--set", f"distill.cache={tmp_path / 'cache'}",
               "--set", "eval_prompts=", "--set", "eval_batches=1", "--set", "log_every=1")
    assert "| (c) |" in out and "| (d) |" in out


def test_pretrained_init_benchmark_runs():
    pytest.importorskip("transformers")
    out = _run("-m", "benchmarks.pretrained_init", "--smoke")
    assert "| teacher (full precision) |" in out and "| (c) converted + KD + relation |" in out


def test_export_scripts_run(trained_run, tmp_path):
    pytest.importorskip("llama_cpp")
    pytest.importorskip("transformers")
    from bitjax.cli import main

    gguf, packed = tmp_path / "m.gguf", tmp_path / "packed"
    assert main(["export", str(trained_run), str(gguf), "--format", "gguf"]) == 0
    assert main(["export", str(trained_run), str(packed), "--format", "packed"]) == 0
    assert "argmax agreement" in _run("export/check_llama_cpp.py", str(trained_run), str(gguf), "--tokens", "32",
                                      "--greedy", "4")
    assert "argmax agreement" in _run("export/check_transformers.py", str(trained_run), str(packed), "--tokens", "32")


def test_teacher_tasks_benchmark_runs(tmp_path):
    pytest.importorskip("llama_cpp")
    out = _run("-m", "benchmarks.teacher_tasks", "--tasks", "chain_sum,gcd", "--problems", "1", "--max-new-tokens",
               "8", "--out-dir", str(tmp_path / "traces"), "--results", str(tmp_path / "results.jsonl"))
    assert "| chain_sum | " in out and "| gcd | " in out
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == 2


def test_trace_sampling_benchmark_runs(trained_run, tmp_path):
    pytest.importorskip("llama_cpp")
    from bitjax.cli import main

    gguf = tmp_path / "m.gguf"
    assert main(["export", str(trained_run), str(gguf), "--format", "gguf"]) == 0
    out = _run("-m", "benchmarks.trace_sampling", "--run", str(trained_run), "--gguf", str(gguf), "--task",
               "chain_sum:min_terms=2,max_terms=3", "--prompts", "2", "--samples", "2", "--batch", "4",
               "--max-new-tokens", "4", "--threads", "1")
    assert "| jax, batch 4 | 1.0 |" in out and "| llama.cpp, 1 threads | 0.0 |" in out
    assert "equal to the sequential path's: 4/4" in out
