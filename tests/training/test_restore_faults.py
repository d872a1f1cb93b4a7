"""A fault of the machine while a checkpoint is read is not damage: nothing is moved, and a rerun resumes.

The faults are raised below Orbax, where TensorStore opens each stored array (`tensorstore.open`), so they
travel through Orbax's async restore as a real one would: out of memory (XLA's RESOURCE_EXHAUSTED), an I/O
error, a missing package. Train, eval and export each get one line naming the cause (exit 2 on the command
line); every checkpoint stays where it was, and the same command without the fault resumes from the newest.
"""

import errno
import os
import shutil

import jax
import numpy as np
import pytest
import tensorstore

from bitjax.cli import main
from bitjax.config import apply_overrides, load_recipe
from bitjax.run import Run
from bitjax.run.restore_faults import CheckpointReadError, classify
from bitjax.training import Trainer, train
from bitjax.training.checkpointer import Checkpointer
from tests.support import SAVE_EVERY_STEP_OVERRIDES, TINY

FAULTS = {
    "out of memory": lambda: jax.errors.JaxRuntimeError(
        "RESOURCE_EXHAUSTED: Out of memory while trying to allocate 33554432 bytes."),
    "an I/O error": lambda: OSError(errno.EIO, os.strerror(errno.EIO), "checkpoints/3/state/d/0a1b"),
    "a package is missing": lambda: ModuleNotFoundError("No module named 'gcsfs'"),
}


def _config(steps):
    return apply_overrides(load_recipe(TINY), [*SAVE_EVERY_STEP_OVERRIDES, f"steps={steps}"])




@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A 3-step run with a checkpoint at each step, and the same run continued to step 4 without a fault."""
    base = tmp_path_factory.mktemp("restore_faults")
    train(_config(3), base / "run", progress=False)
    shutil.copytree(base / "run", base / "continued")
    train(_config(4), base / "continued", progress=False)
    return base


def _inject(monkeypatch, fault):
    def failing_open(*args, **kwargs):
        raise FAULTS[fault]()
    monkeypatch.setattr(tensorstore, "open", failing_open)


def _listing(workdir):
    return sorted(str(p.relative_to(workdir)) for p in (workdir / "checkpoints").rglob("*"))


def _params(workdir, step):
    cfg = _config(step)
    ckpt = Checkpointer(workdir / "checkpoints", cfg)
    state = ckpt.restore_state(step, Trainer.create(cfg).abstract_state())
    ckpt.close()
    return [np.asarray(x) for x in jax.tree.leaves(state.params)]


def test_train_moves_nothing_and_the_rerun_resumes_from_the_newest_checkpoint(pristine, tmp_path, monkeypatch):
    workdir = tmp_path / "run"
    shutil.copytree(pristine / "run", workdir)
    before = _listing(workdir)
    for fault in FAULTS:
        _inject(monkeypatch, fault)
        with pytest.raises(CheckpointReadError) as info:
            train(_config(4), workdir, progress=False)
        message = str(info.value)
        assert "\n" not in message and message.startswith(f"could not read checkpoint step 3 in {workdir}"), message
        assert f": {fault} (" in message and "nothing was moved" in message, message
        assert _listing(workdir) == before and not (workdir / "damaged_checkpoints").exists()
        monkeypatch.undo()
    summary = train(_config(4), workdir, progress=False)
    assert summary["resumed_from"] == 3
    for a, b in zip(_params(workdir, 4), _params(pristine / "continued", 4)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("fault", list(FAULTS))
def test_eval_and_export_name_the_fault_in_one_line(pristine, tmp_path, monkeypatch, capsys, fault):
    workdir = tmp_path / "run"
    shutil.copytree(pristine / "run", workdir)
    before = _listing(workdir)
    _inject(monkeypatch, fault)
    for command in (["eval", str(workdir), "--batches", "1"],
                    ["export", str(workdir), str(tmp_path / "m.gguf"), "--format", "gguf"]):
        assert main(command) == 2, command
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and err.startswith(f"bitjax: error: could not read checkpoint step 3 in {workdir}")
        assert f": {fault} (" in err and "damaged" not in err, err
    assert not (tmp_path / "m.gguf").exists()
    monkeypatch.undo()
    assert _listing(workdir) == before
    for a, b in zip(jax.tree.leaves(Run(workdir).flat_params()), jax.tree.leaves(Run(pristine / "run").flat_params())):
        np.testing.assert_array_equal(a, b)


def test_only_damage_is_damage():
    """What the readers raise for damaged files, and what they raise for a fault of the machine."""
    damage = [ValueError('NOT_FOUND: Error opening "zarr" driver: Metadata at "params.x/.zarray" does not exist'),
              ValueError('OUT_OF_RANGE: Error reading "params.x" in OCDBT database'),
              ValueError("DATA_LOSS: Error reading ... checksum mismatch"),
              ValueError('FAILED_PRECONDITION: Error reading local file "_sharding": Invalid JSON'),
              FileNotFoundError("Metadata file (named _METADATA) does not exist"),
              ValueError('Error opening "zarr" driver: Error reading "opt_state.1.hyperparams.b1/.zarray" in OCDBT '
                         'database at local file "run/checkpoints/2/state/": Error reading Byte range [0, 12529) of '
                         'local file "d/4c54": Error decoding b-tree node: End of data expected; remaining length: '
                         '16; at byte 12525'),   # a bit flipped in a b-tree node: no status code
              ValueError("User-provided restore item and on-disk value metadata tree structures do not match")]
    for error in damage:
        assert classify(error)[0] == "damage", error
    faults = {MemoryError(): "out of memory",
              ValueError('RESOURCE_EXHAUSTED: Error reading "params.x" in OCDBT database'): "out of memory",
              ImportError("cannot import name 'x'"): "a package is missing",
              TimeoutError("read timed out"): "an I/O error",
              PermissionError(errno.EACCES, "Permission denied"): "an I/O error",
              ValueError("UNAVAILABLE: GCS returned 503"): "an I/O error",
              ValueError("DEADLINE_EXCEEDED: read of gs://b/x"): "an I/O error"}
    for error, cause in faults.items():
        assert classify(error)[0] == cause, error
    # a cause deeper in the chain decides when the outer error says nothing
    wrapped = RuntimeError("restore failed")
    wrapped.__cause__ = OSError(errno.EIO, "Input/output error")
    assert classify(wrapped)[0] == "an I/O error"
    assert classify(KeyError("x")) is None and classify(TypeError("bug")) is None   # a bug keeps its traceback
