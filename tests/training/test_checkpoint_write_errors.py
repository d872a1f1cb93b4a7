"""A checkpoint that cannot be written (disk full, read-only file system) is one line naming the path, and
the last good checkpoint stays intact: the same command resumes from it once the disk has room."""

import errno
import os
import subprocess

import pytest
from orbax.checkpoint._src.handlers import json_checkpoint_handler

from bitjax.config import apply_overrides, load_recipe
from bitjax.errors import BitjaxError
from bitjax.training import train
from bitjax.training.checkpointer import Checkpointer, CheckpointWriteError
from tests.support import TINY


def _config(steps, async_save):
    return apply_overrides(load_recipe(TINY), [
        "model.n_layers=1", "data.seq_len=32", "data.batch_size=2", f"steps={steps}", "checkpoint.every=1",
        f"checkpoint.async_save={str(async_save).lower()}", "log_every=100", "eval_batches=1", "eval_every=1000"])


@pytest.mark.parametrize("async_save", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS], ids=["disk-full", "read-only"])
def test_a_failed_save_is_one_line_and_the_last_good_checkpoint_resumes(tmp_path, monkeypatch, code, async_save):
    original = json_checkpoint_handler.JsonCheckpointHandler._save_fn

    async def failing_save(self, x, directory):   # the file system refuses the write of step 3's metadata
        if "/3" in str(directory).replace(str(tmp_path), ""):
            raise OSError(code, os.strerror(code), str(directory))
        return await original(self, x, directory)

    monkeypatch.setattr(json_checkpoint_handler.JsonCheckpointHandler, "_save_fn", failing_save)
    with pytest.raises(CheckpointWriteError) as info:
        train(_config(4, async_save), tmp_path, progress=False)
    message = str(info.value)
    assert "\n" not in message and os.strerror(code) in message and str(tmp_path / "checkpoints") in message
    assert "last good checkpoint (step 2) is intact" in message, message
    monkeypatch.undo()
    summary = train(_config(4, async_save), tmp_path, progress=False)
    assert summary["resumed_from"] == 2 and summary["steps"] == 4


def test_a_read_only_mount_is_one_line(tmp_path):
    """A real read-only file system, where this machine lets the test mount one (root in a container)."""
    mnt = tmp_path / "ro"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a file system here")
    try:
        train(_config(1, False), mnt, progress=False)
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        with pytest.raises(BitjaxError, match=r"Read-only file system") as info:
            train(_config(2, False), mnt, progress=False)
        assert "\n" not in str(info.value) and str(mnt) in str(info.value)
        assert Checkpointer(mnt / "checkpoints", _config(2, False)).latest_step() == 1
        with pytest.raises(BitjaxError, match=r"--workdir .*/new cannot be created \(Read-only file system"):
            train(_config(1, False), mnt / "new", progress=False)   # a new workdir on it
    finally:
        subprocess.run(["umount", str(mnt)])


def test_a_really_full_disk_is_one_line_and_keeps_the_last_checkpoint(tmp_path):
    """A real file system with room for one checkpoint (about 15 MB) and not two, where mounting is allowed."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=22m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a file system here")
    try:
        with pytest.raises(CheckpointWriteError, match=r"No space left on device.*step 1\) is intact") as info:
            train(_config(3, False), mnt, progress=False)
        assert "\n" not in str(info.value)
        assert Checkpointer(mnt / "checkpoints", _config(3, False)).latest_step() == 1
    finally:
        subprocess.run(["umount", str(mnt)])


def test_an_array_write_the_kernel_refuses_is_one_line_and_the_same_command_resumes(tmp_path):
    """A real failure of TensorStore's array write, without root or a mount: the kernel refuses to grow any file
    of the command past 1 MiB (`ulimit -f`, EFBIG), so step 3's array data cannot be written (steps 1 and 2 were
    written without the limit). The command prints one line, exits 2 and keeps step 2; the same run resumes from
    it once the limit is gone."""
    import shlex
    import sys

    from tests.support import ROOT
    workdir = tmp_path / "run"
    train(_config(2, True), workdir, progress=False)
    command = [sys.executable, "-m", "bitjax.cli", "train", str(TINY), "--workdir", str(workdir), "--no-progress"]
    for override in ["model.n_layers=1", "data.seq_len=32", "data.batch_size=2", "steps=4", "checkpoint.every=1",
                     "log_every=100", "eval_batches=1", "eval_every=1000"]:
        command += ["--set", override]
    # SIGXFSZ ignored (it survives exec): the write fails with EFBIG instead of killing the process
    limited = ["bash", "-c", f"ulimit -f 1024 && trap '' XFSZ && exec {shlex.join(command)}"]
    refused = subprocess.run(limited, capture_output=True, text=True,
                             env={**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)})
    assert refused.returncode == 2 and len(refused.stderr.splitlines()) == 1, refused.stderr[-3000:]
    line = refused.stderr.strip()
    assert line.startswith(f"bitjax: error: could not write checkpoint step 3 in {workdir / 'checkpoints'}: File "
                           "too large") and "/d/" in line, line   # an array data file of the state
    assert "last good checkpoint (step 2) is intact" in line and "ulimit -f" in line, line
    assert Checkpointer(workdir / "checkpoints", _config(4, True)).latest_step() == 2
    summary = train(_config(4, True), workdir, progress=False)
    assert summary["resumed_from"] == 2 and summary["steps"] == 4


def test_a_write_refused_with_only_a_status_is_named():
    """TensorStore may say only RESOURCE_EXHAUSTED (a full disk, a bucket's quota): still one line, not a
    traceback."""
    from bitjax.training.checkpointer import _os_error
    error = _os_error(ValueError('RESOURCE_EXHAUSTED: Error writing "opt_state.1.count/0" in OCDBT database at '
                                 'local file "/runs/a/checkpoints/3.orbax-checkpoint-tmp/state"'))
    assert error.errno == errno.ENOSPC and error.filename == "/runs/a/checkpoints/3.orbax-checkpoint-tmp/state"
    assert _os_error(ValueError("NOT_FOUND: Error reading")) is None
