"""A damaged newest checkpoint is named in one line, set aside, and the run resumes from the step before it.

Flipped bits inside an array's stored values are among the cases: Orbax's tensorstore files carry no
checksum of array values, so bitjax saves its own with each checkpoint (bitjax.run.checksums).
"""

import json
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest

from bitjax.config import apply_overrides, load_recipe
from bitjax.errors import ConfigError
from bitjax.training import Trainer, train
from bitjax.training.checkpointer import Checkpointer
from tests.support import SAVE_EVERY_STEP_OVERRIDES, TINY


def _config(steps):
    return apply_overrides(load_recipe(TINY), [*SAVE_EVERY_STEP_OVERRIDES, f"steps={steps}"])


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A 3-step run with a checkpoint at each step."""
    workdir = tmp_path_factory.mktemp("pristine")
    train(_config(3), workdir, progress=False)
    return workdir


def _params(workdir, step):
    cfg = _config(3)
    ckpt = Checkpointer(workdir / "checkpoints", cfg)
    state = ckpt.restore_state(step, Trainer.create(cfg).abstract_state())
    ckpt.close()
    return [np.asarray(x) for x in jax.tree.leaves(state.params)]


def _data_files(step_dir: Path) -> list[Path]:
    """Every file of array data in a step's state (OCDBT `d/` directories). How Orbax spreads the arrays over
    them varies (one file here, several elsewhere), so damage goes to all of them: parameters are surely hit."""
    files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
    assert files, f"no OCDBT data files under {step_dir / 'state'}"
    return files


def _truncate(step_dir):
    for f in _data_files(step_dir):
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _remove_data_files(step_dir):
    for f in _data_files(step_dir):
        f.unlink()


def _remove_manifests(step_dir):
    for f in (step_dir / "state").rglob("manifest.ocdbt"):
        f.unlink()


def _flip_a_value_bit(step_dir, at=(0.5,)):
    """One bit at each fraction `at` of every stored array file: it still decodes, to wrong values."""
    for f in _data_files(step_dir):
        data = bytearray(f.read_bytes())
        for fraction in at:
            data[int(len(data) * fraction)] ^= 0x10
        f.write_bytes(bytes(data))


def _unlist_a_parameter(step_dir):
    """The state's own metadata no longer lists the embedding: the tree does not match the stored arrays."""
    path = step_dir / "state" / "_METADATA"
    metadata = json.loads(path.read_text())
    del metadata["tree_metadata"][next(k for k in metadata["tree_metadata"] if "embed_tokens" in k)]
    path.write_text(json.dumps(metadata))


DAMAGE = {
    "flipped bit in an array value": _flip_a_value_bit,
    "truncated data file": _truncate,
    "missing data files": _remove_data_files,
    "missing state metadata": lambda d: (d / "state" / "_METADATA").unlink(),
    "missing manifest": _remove_manifests,
    "state metadata lists another tree": _unlist_a_parameter,
    "meta not JSON": lambda d: (d / "meta" / "metadata").write_text("{not json"),
    "data state not JSON": lambda d: (d / "data" / "process_0-of-1.json").write_text("{not json"),
    "missing data state": lambda d: (d / "data" / "process_0-of-1.json").unlink(),
    "empty step directory": lambda d: [shutil.rmtree(d), d.mkdir()],
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_latest_step_is_set_aside_and_the_run_resumes_from_the_one_before(pristine, tmp_path, damage,
                                                                                   capsys):
    workdir = tmp_path / "run"
    shutil.copytree(pristine, workdir)
    DAMAGE[damage](workdir / "checkpoints" / "3")
    summary = train(_config(3), workdir, progress=False)
    out = capsys.readouterr().out
    damaged_lines = [line for line in out.splitlines() if "is damaged" in line]
    assert len(damaged_lines) == 1 and "checkpoint step 3 is damaged" in damaged_lines[0], out
    assert summary["resumed_from"] == 2
    assert (workdir / "damaged_checkpoints" / "3").is_dir()   # set aside, never deleted
    for a, b in zip(_params(workdir, 3), _params(pristine, 3)):
        np.testing.assert_array_equal(a, b)


def test_an_empty_newer_step_directory_is_set_aside(pristine, tmp_path, capsys):
    workdir = tmp_path / "run"
    shutil.copytree(pristine, workdir)
    (workdir / "checkpoints" / "4").mkdir()
    summary = train(_config(4), workdir, progress=False)
    assert "checkpoint step 4 is damaged" in capsys.readouterr().out
    assert summary["resumed_from"] == 3 and summary["steps"] == 4


def test_every_step_damaged_is_one_error(pristine, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(pristine, workdir)
    for step in (1, 2, 3):
        (workdir / "checkpoints" / str(step) / "meta" / "metadata").write_text("{not json")
    with pytest.raises(ConfigError, match=r"every checkpoint .* is damaged \(steps 3, 2, 1"):
        train(_config(3), workdir, progress=False)


def test_asking_for_a_damaged_step_is_one_line_naming_it(pristine, tmp_path):
    from bitjax.run import Run
    workdir = tmp_path / "run"
    shutil.copytree(pristine, workdir)
    _remove_data_files(workdir / "checkpoints" / "2")
    with pytest.raises(ConfigError, match=r"checkpoint step 2 .* is damaged") as info:
        Run(workdir, step=2).flat_params()
    assert "\n" not in str(info.value)
    assert len(Run(workdir, step=3).flat_params()) > 0   # the other steps still read


def test_a_flipped_value_bit_is_refused_by_eval_and_export_too(pristine, tmp_path):
    from bitjax.run import Run
    workdir = tmp_path / "run"
    shutil.copytree(pristine, workdir)
    # the files hold Adam's moments too, which eval and export never read: flip bits all over them
    _flip_a_value_bit(workdir / "checkpoints" / "2", at=[i / 20 for i in range(1, 20)])
    # refused by the value checksums, or earlier where a flip lands in a compressed chunk
    with pytest.raises(ConfigError, match=r"checkpoint step 2 .* is damaged"):
        Run(workdir, step=2).flat_params()
    assert len(Run(workdir, step=1).flat_params()) > 0   # the untouched step reads


def test_checksums_catch_one_flipped_bit_in_any_dtype():
    """Each of 2 x 32 single-bit flips in float32, bfloat16 and int8 arrays changes the saved sums."""
    import jax.numpy as jnp

    from bitjax.run import checksums as state_checksum
    rng = np.random.default_rng(0)
    for dtype in (np.float32, jnp.bfloat16, np.int8):
        x = np.asarray(rng.normal(size=(7, 5)) * 10).astype(dtype)
        meta = {state_checksum.META_KEY: state_checksum.checksums({"w": x})}
        assert state_checksum.mismatches({"w": x}, meta) == []
        raw = x.reshape(-1).view(np.uint8).copy()
        for bit in range(0, raw.size * 8, max(raw.size * 8 // 64, 1)):
            flipped = raw.copy()
            flipped[bit // 8] ^= 1 << (bit % 8)
            assert state_checksum.mismatches({"w": flipped.view(x.dtype).reshape(x.shape)}, meta) == ["w"], bit


def test_the_command_resuming_past_a_damaged_step_ends_cleanly(pristine, tmp_path):
    """`bitjax train` past missing array files: exit 0 and nothing on stderr. The reads Orbax still had in flight
    when the damaged step failed complete into its closed event loop; their `Event loop is closed` reports used
    to print tracebacks (dozens, at random moments up to the exit)."""
    import os
    import subprocess
    import sys

    from tests.support import ROOT
    workdir = tmp_path / "run"
    shutil.copytree(pristine, workdir)
    _remove_data_files(workdir / "checkpoints" / "3")   # the case that printed them every time
    command = [sys.executable, "-m", "bitjax.cli", "train", str(TINY), "--workdir", str(workdir), "--no-progress"]
    for override in ["model.n_layers=1", "data.seq_len=32", "data.batch_size=2", "steps=3", "checkpoint.every=1",
                     "checkpoint.async_save=false", "log_every=100", "eval_batches=1", "eval_every=1000"]:
        command += ["--set", override]
    done = subprocess.run(command, capture_output=True, text=True,
                          env={**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0 and "checkpoint step 3 is damaged" in done.stdout, done.stderr[-2000:]
    assert done.stderr == "", done.stderr[-3000:]
