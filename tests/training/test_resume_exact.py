"""Exact resume from every step: the data position and the parameters after a restore equal an uninterrupted run.

A saved data position goes through JSON (Grain's CheckpointSave); these tests restore from every point of a
short stream, so a state that only some points hold (a packer with no remainder) cannot slip through.
"""

import json

import numpy as np
import pytest

from bitjax.config import DataConfig, SourceConfig
from bitjax.data import build_pipeline
from bitjax.data.sources import uris
from tests.support import TINY

MIXES = [(0.6, 0.4), (0.95, 0.05)]


@pytest.fixture(scope="module")
def rephrased_jsonl(tmp_path_factory):
    """60 short documents made from natural passages, standing in for rephrased text."""
    path = tmp_path_factory.mktemp("rephrased") / "rephrased.jsonl"
    docs = uris.load_documents("tfds:shakespeare")[:60]
    with path.open("w") as f:
        for d in docs:
            f.write(json.dumps({"id": d["id"] + "#s", "text": "Summary: " + " ".join(d["text"].split()[:40])}) + "\n")
    return path


def _config(rephrased_jsonl, packing, mix):
    srcs = (SourceConfig("natural", "tfds:shakespeare", mix[0]),
            SourceConfig("rephrased", f"jsonl:{rephrased_jsonl}", mix[1]))
    return DataConfig(sources=srcs, vocab_size=512, seq_len=32, batch_size=2, packing=packing)


@pytest.mark.parametrize("mix", MIXES, ids=lambda m: f"{m[0]}-{m[1]}")
@pytest.mark.parametrize("packing", ["concat_then_split", "first_fit"])
def test_restore_from_every_one_of_the_first_20_batches(rephrased_jsonl, packing, mix):
    cfg = _config(rephrased_jsonl, packing, mix)
    pipeline = build_pipeline(cfg)
    it = pipeline.train_iterator()
    n, ahead = 20, 5
    states, batches = [], []
    for _ in range(n + ahead):
        states.append(json.loads(json.dumps(it.get_state())))  # as Grain's CheckpointSave writes it
        batches.append(next(it))
    for point in range(n):
        restored = pipeline.train_iterator()
        restored.set_state(states[point])
        for k in range(ahead):
            got, want = next(restored), batches[point + k]
            for key in want:
                np.testing.assert_array_equal(got[key], want[key], err_msg=f"restored at {point}, batch +{k}, {key}")


def _train_config(packing, mix, steps):
    from bitjax.config import apply_overrides, load_recipe
    return apply_overrides(load_recipe(TINY), [
        "model.n_layers=1", "data.seq_len=32", "data.batch_size=2", f"data.packing={packing}",
        f"data.weights=natural={mix[0]},rephrased={mix[1]}", f"steps={steps}", "checkpoint.every=1",
        f"checkpoint.keep={steps + 1}", "checkpoint.async_save=false", "log_every=100", "eval_every=1000",
        "eval_batches=1", "optim.warmup_steps=2"])


def _saved(workdir, step, cfg):
    """The parameters, step and data position of a run's checkpoint at `step`."""
    import jax

    from bitjax.training.checkpointer import Checkpointer
    from bitjax.training.trainer import Trainer
    ckpt = Checkpointer(workdir / "checkpoints", cfg)
    state = ckpt.restore_state(step, Trainer.create(cfg).abstract_state())
    ckpt.close()
    data = [p.read_text() for p in sorted((workdir / "checkpoints" / str(step) / "data").glob("*.json"))]
    return [np.asarray(x) for x in jax.tree.leaves(state.params)], int(state.step), data


@pytest.mark.slow
@pytest.mark.parametrize("mix", MIXES, ids=lambda m: f"{m[0]}-{m[1]}")
@pytest.mark.parametrize("packing", ["concat_then_split", "first_fit"])
def test_resume_from_every_step_is_bitwise_exact(tmp_path, packing, mix):
    """Train 9 steps saving at each; resume from each saved step alone: the end is bitwise the straight run's."""
    import shutil

    from bitjax.training import train
    steps = 9   # resumed from each of steps 1-8
    cfg = _train_config(packing, mix, steps)
    straight = tmp_path / "straight"
    train(cfg, straight, progress=False)
    want_params, _, want_data = _saved(straight, steps, cfg)
    for point in range(1, steps):
        workdir = tmp_path / f"from_{point}"
        shutil.copytree(straight / "checkpoints" / str(point), workdir / "checkpoints" / str(point))
        summary = train(cfg, workdir, progress=False)
        assert summary["resumed_from"] == point
        params, step, data = _saved(workdir, steps, cfg)
        assert step == steps
        assert data == want_data, f"data position differs after resuming from step {point}"
        for a, b in zip(params, want_params):
            np.testing.assert_array_equal(a, b, err_msg=f"resumed from step {point}")
