import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from bitjax.config import apply_overrides, load_recipe
from bitjax.training import Trainer, train
from bitjax.training.checkpointer import Checkpointer
from tests.support import ROOT

TINY = str(ROOT / "recipes" / "tiny.py")
# A smaller variant of the tiny recipe for the tests that train
FAST = ["model.n_layers=2", "data.seq_len=64", "data.batch_size=8", "log_every=5", "eval_every=1000",
        "eval_batches=1", "optim.warmup_steps=5"]


def fast_config(*extra):
    return apply_overrides(load_recipe(TINY), FAST + list(extra))


def test_tiny_recipe_loss_falls(tmp_path):
    cfg = apply_overrides(load_recipe(TINY), ["steps=60", "eval_every=60", "eval_batches=2", "log_every=10"])
    summary = train(cfg, tmp_path, progress=False)
    assert summary["steps"] == 60
    assert summary["final_loss"] < summary["first_logged_loss"] - 1.0, summary
    assert summary["heldout_loss"] < np.log(cfg.model.vocab_size) - 1.0, summary
    for name in ("loss_curve.png", "metrics.jsonl", "config.json", "summary.json"):
        assert (tmp_path / name).exists()
    assert any((tmp_path / "tb").iterdir())
    # per-source token counts reach the logs, in the recipe's 60/40 proportion
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    natural = sum(r.get("data/tokens/natural", 0) for r in records)
    rephrased = sum(r.get("data/tokens/rephrased", 0) for r in records)
    assert natural + rephrased == 60 * cfg.data.batch_size * cfg.data.seq_len
    assert abs(natural / (natural + rephrased) - 0.6) < 0.05


def _bitjax(workdir, *overrides):
    args = [sys.executable, "-m", "bitjax.cli", "train", TINY, "--workdir", str(workdir), "--no-progress"]
    for o in FAST + list(overrides):
        args += ["--set", o]
    return args


def _final_params(workdir, step):
    cfg = fast_config()
    ckpt = Checkpointer(Path(workdir) / "checkpoints", cfg)
    state = ckpt.restore_state(step, Trainer.create(cfg).abstract_state())
    ckpt.close()
    return jax.tree.leaves(state.params), int(state.step)


def test_resume_after_sigkill_is_bitwise_exact(tmp_path):
    steps = ["steps=40", "checkpoint.every=20", "data.batch_size=16", "data.seq_len=128"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    subprocess.run(_bitjax(straight, *steps), check=True, cwd=ROOT, capture_output=True)

    proc = subprocess.Popen(_bitjax(resumed, *steps), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    ckpt_20 = resumed / "checkpoints" / "20"
    deadline = time.time() + 300
    while not ckpt_20.is_dir() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (resumed / "checkpoints" / "40").exists(), "killed too late to test resuming"

    out = subprocess.run(_bitjax(resumed, *steps), check=True, cwd=ROOT, capture_output=True, text=True)
    assert "resumed from step 20" in out.stdout

    a, step_a = _final_params(straight, 40)
    b, step_b = _final_params(resumed, 40)
    assert step_a == step_b == 40
    for x, y in zip(a, b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# Tiny shapes for the tests that stop a run with a signal and rerun it to the end
SMALL = ["model.n_layers=1", "data.seq_len=32", "data.batch_size=2", "log_every=1"]


def _stop_and_rerun(workdir, sig, overrides):
    """Start a run, send `sig` once it has logged a step, then rerun the same command to the end."""
    args = _bitjax(workdir, *SMALL, *overrides)
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    metrics = workdir / "metrics.jsonl"   # its first line: step 1 is done, the signal handlers are in place
    while not (metrics.exists() and metrics.stat().st_size) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=300)
    saved = Checkpointer(workdir / "checkpoints", fast_config()).latest_step()
    rerun = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    return proc.returncode, out, saved, rerun


@pytest.mark.parametrize("sig, code, every", [
    (signal.SIGTERM, 0, 1000),
    (signal.SIGTERM, 0, 1),   # the stop falls on a scheduled save
    (signal.SIGINT, 130, 1000),
    pytest.param(signal.SIGINT, 130, 1, marks=pytest.mark.slow)],
                         ids=["sigterm", "sigterm-every-step", "ctrl-c", "ctrl-c-every-step"])
def test_a_stop_signal_saves_once_and_the_same_command_finishes(tmp_path, sig, code, every):
    steps = 150 if every > 1 else 30   # saving every step, the rerun's steps cost a save each
    returncode, out, saved, rerun = _stop_and_rerun(tmp_path, sig, [f"steps={steps}", f"checkpoint.every={every}"])
    assert returncode == code, out
    assert f"stopped by {sig.name}" in out and "Traceback" not in out, out
    assert saved is not None and 0 < saved < steps, out
    assert rerun.returncode == 0, rerun.stderr
    assert f"resumed from step {saved}" in rerun.stdout
    assert Checkpointer(tmp_path / "checkpoints", fast_config()).latest_step() == steps


def test_a_second_ctrl_c_interrupts_at_once_and_the_rerun_finishes(tmp_path):
    """The first Ctrl-C asks for a save; a second one right after it stops the process without waiting for it
    (one line, exit 130). Whatever the interrupted save left, the same command resumes from a complete
    checkpoint (or step 0) and finishes."""
    steps = 150
    args = _bitjax(tmp_path, *SMALL, f"steps={steps}", "checkpoint.every=1000")
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    metrics, deadline = tmp_path / "metrics.jsonl", time.time() + 300
    while not (metrics.exists() and metrics.stat().st_size) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 130, out
    assert "bitjax: interrupted" in out and "Traceback" not in out, out
    rerun = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert Checkpointer(tmp_path / "checkpoints", fast_config()).latest_step() == steps


def test_a_resumed_run_finds_its_compiled_step_on_disk(tmp_path):
    """The persistent compilation cache: the first run writes its compiled programs under <cache>/xla, and
    the rerun that resumes reads them instead of compiling again (JAX logs the cache hit)."""
    env = {**os.environ, "BITJAX_CACHE": str(tmp_path / "cache"), "JAX_PLATFORMS": "cpu",
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_DEBUG_LOG_MODULES": "jax._src.compiler"}
    first = subprocess.run(_bitjax(tmp_path / "run", "steps=2"), cwd=ROOT, env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr[-2000:]
    entries = list((tmp_path / "cache" / "xla").iterdir())
    assert entries, "nothing was written to the compilation cache"
    again = subprocess.run(_bitjax(tmp_path / "run", "steps=3"), cwd=ROOT, env=env, capture_output=True,
                           text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resumed from step 2" in again.stdout
    assert "Persistent compilation cache hit" in again.stderr, again.stderr[-3000:]
