"""A run directory through bitjax.run: parameters only, restored onto whatever devices are present.

A run trained on 8 simulated devices with the parameters split 8 ways (mesh.fsdp=8) is evaluated, exported
and used as a teacher in this 1-device process, and gives the parameters the 8-device process restores.
"""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from bitjax.cli import main
from bitjax.errors import ConfigError
from bitjax.run import Run, RunPaths
from tests.support import ROOT

TINY = str(ROOT / "recipes" / "tiny.py")
FSDP8 = ["model.n_layers=2", "data.seq_len=64", "data.batch_size=8", "log_every=1", "eval_every=1000",
         "eval_batches=1", "optim.warmup_steps=2", "steps=3", "mesh.data=1", "mesh.fsdp=8"]

# In the 8-device process: train, then restore the run's parameters there and print their checksums.
_TRAIN_AND_RESTORE = """
import json, sys
import jax, numpy as np
from bitjax.cli import main
from bitjax.run import Run
workdir, overrides = sys.argv[1], sys.argv[2:]
args = ["train", {tiny!r}, "--workdir", workdir, "--no-progress"]
for o in overrides:
    args += ["--set", o]
assert main(args) == 0
run = Run(workdir)
shardings = {{str(leaf.sharding.spec) for leaf in jax.tree.leaves(run.params)}}
print("CHECKSUMS " + json.dumps({{"devices": jax.device_count(), "specs": sorted(shardings),
      "sums": {{k: float(np.sum(v, dtype=np.float64)) for k, v in run.flat_params().items()}}}}))
"""


def _checksums(run: Run) -> dict[str, float]:
    return {k: float(np.sum(v, dtype=np.float64)) for k, v in run.flat_params().items()}


@pytest.fixture(scope="module")
def fsdp8_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("fsdp8") / "run"
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT),
               XLA_FLAGS="--xla_force_host_platform_device_count=8")
    out = subprocess.run([sys.executable, "-c", _TRAIN_AND_RESTORE.format(tiny=TINY), str(workdir), *FSDP8],
                         env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    line = next(x for x in out.stdout.splitlines() if x.startswith("CHECKSUMS "))
    return workdir, json.loads(line[len("CHECKSUMS "):])


def test_an_fsdp8_run_restores_in_one_device_with_the_same_parameters(fsdp8_run):
    workdir, there = fsdp8_run
    assert there["devices"] == 8 and any("fsdp" in spec for spec in there["specs"])   # really split 8 ways
    run = Run(workdir)
    assert jax.device_count() == 1 and run.step == 3
    here = _checksums(run)
    assert here.keys() == there["sums"].keys()
    np.testing.assert_allclose([here[k] for k in sorted(here)], [there["sums"][k] for k in sorted(here)], rtol=1e-6)


def test_an_fsdp8_run_is_evaluated_exported_and_teaches_in_one_device(fsdp8_run, tmp_path, capsys):
    from bitjax.teachers.backends import BitjaxTeacher

    workdir, _ = fsdp8_run
    assert main(["eval", str(workdir), "--batches", "1"]) == 0
    assert "heldout_perplexity" in capsys.readouterr().out
    out = tmp_path / "student.gguf"
    assert main(["export", str(workdir), str(out), "--format", "gguf", "--type", "tq2_0"]) == 0
    assert out.stat().st_size > 0
    teacher = BitjaxTeacher(workdir)
    tokens = np.arange(1, 17, dtype=np.int32)[None]
    ids, logprobs, tail = teacher.topk(tokens, 4)
    assert ids.shape == (1, 16, 4) and np.all(np.diff(logprobs, axis=-1) <= 0) and np.all(tail <= 0)
    # the teacher's forward is the run's own model, fully quantized
    want = np.asarray(Run(workdir).model()(tokens))
    np.testing.assert_allclose(teacher.logits(tokens), want, rtol=1e-5, atol=1e-5)


def test_run_names_every_file_of_the_layout(tmp_path):
    paths = RunPaths(tmp_path)
    assert paths.config.name == "config.json" and paths.tokenizer.name == "tokenizer.json"
    assert paths.checkpoints.name == "checkpoints" and paths.log_dir(0) == tmp_path
    assert paths.log_dir(2) == tmp_path / "process_logs" / "2"


def test_a_directory_without_a_run_is_a_one_line_error(tmp_path):
    with pytest.raises(ConfigError, match="not a bitjax run directory"):
        Run(tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        Run(tmp_path / "missing")


def test_a_step_without_a_checkpoint_is_a_one_line_error(fsdp8_run):
    workdir, _ = fsdp8_run
    with pytest.raises(ConfigError, match=r"no checkpoint of step 7; it has steps 3"):
        Run(workdir, step=7)
