"""One trainer per workdir: a second `bitjax train` is refused in one line; a killed trainer's lock is stale."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from bitjax.run import RunPaths
from bitjax.training import lock as workdir_lock
from tests.support import ROOT

TINY = str(ROOT / "recipes" / "tiny.py")
SMALL = ["model.n_layers=1", "data.seq_len=32", "data.batch_size=2", "log_every=1", "eval_batches=1"]


def _bitjax(workdir, *overrides):
    args = [sys.executable, "-m", "bitjax.cli", "train", TINY, "--workdir", str(workdir), "--no-progress"]
    for o in SMALL + list(overrides):
        args += ["--set", o]
    return args


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_second_trainer_on_the_workdir_is_refused_and_a_killed_ones_lock_is_stale(tmp_path):
    first = subprocess.Popen(_bitjax(tmp_path, "steps=100000"), cwd=ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while not (tmp_path / "metrics.jsonl").exists() and first.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert first.poll() is None, "the first trainer ended early"
        second = subprocess.run(_bitjax(tmp_path, "steps=3"), cwd=ROOT, capture_output=True, text=True)
        assert second.returncode == 2, second.stderr
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and f"pid {first.pid}" in lines[0] and "train.lock" in lines[0], second.stderr
        assert not (tmp_path / "checkpoints" / "3").exists()
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert RunPaths(tmp_path).lock.exists()   # left behind by the killed trainer: stale
    third = subprocess.run(_bitjax(tmp_path, "steps=3"), cwd=ROOT, capture_output=True, text=True)
    assert third.returncode == 0, third.stderr
    assert not RunPaths(tmp_path).lock.exists()   # released at the end


def test_stale_and_live_locks(tmp_path):
    lock = tmp_path / "train.lock"
    lock.write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname()}))
    with workdir_lock.held(lock, "workdir x"):   # a dead pid on this host: replaced
        assert json.loads(lock.read_text())["pid"] == os.getpid()
        with pytest.raises(workdir_lock.WorkdirLockedError, match=f"pid {os.getpid()}"):
            workdir_lock.acquire(lock, "workdir x")
    assert not lock.exists()
    # another host's lock cannot be checked from here: refused, naming the host and the fix
    lock.write_text(json.dumps({"pid": 1, "host": "elsewhere"}))
    with pytest.raises(workdir_lock.WorkdirLockedError, match="host elsewhere.*delete"):
        workdir_lock.acquire(lock, "workdir x")
    # a torn lock (killed while writing it) is stale once it is not fresh
    lock.write_text("{")
    os.utime(lock, (time.time() - 60, time.time() - 60))
    workdir_lock.acquire(lock, "workdir x")
    workdir_lock.release(lock)
    # a process other than 0 of a multi-host run takes no lock
    with workdir_lock.held(lock, "workdir x", enabled=False):
        assert not lock.exists()
