"""Running the same command again: a finished run stays as it is, `steps=` raised continues it from its last
checkpoint, and a run directory is refused to a run whose tokenizer differs."""

import json

import jax
import numpy as np
import pytest

from bitjax.config import apply_overrides, load_recipe
from bitjax.errors import ConfigError
from bitjax.training import Trainer, train
from bitjax.training.checkpointer import Checkpointer
from tests.support import TINY

SMALL = ["model.n_layers=1", "data.seq_len=32", "data.batch_size=4", "log_every=1", "eval_every=1000",
         "eval_batches=1"]


def _cfg(*extra):
    return apply_overrides(load_recipe(TINY), SMALL + list(extra))


def _steps_logged(workdir):
    return [json.loads(line)["step"] for line in (workdir / "metrics.jsonl").read_text().splitlines()
            if "loss" in json.loads(line)]


def _params(workdir, cfg, step):
    ckpt = Checkpointer(workdir / "checkpoints", cfg)
    state = ckpt.restore_state(step, Trainer.create(cfg).abstract_state())
    ckpt.close()
    return [np.asarray(x) for x in jax.tree.leaves(state.params)], int(state.step)


def test_rerun_of_a_finished_run_then_more_steps_then_another_tokenizer(tmp_path):
    train(_cfg("steps=4"), tmp_path, progress=False)
    before, step = _params(tmp_path, _cfg("steps=4"), 4)
    assert step == 4 and _steps_logged(tmp_path) == [1, 2, 3, 4]

    # the same command again: nothing trains, the checkpoint and the log are unchanged
    train(_cfg("steps=4"), tmp_path, progress=False)
    after, step = _params(tmp_path, _cfg("steps=4"), 4)
    assert step == 4 and _steps_logged(tmp_path) == [1, 2, 3, 4]
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)

    # steps raised: steps 5 and 6 run from the step-4 checkpoint
    train(_cfg("steps=6"), tmp_path, progress=False)
    _, step = _params(tmp_path, _cfg("steps=6"), 6)
    assert step == 6 and _steps_logged(tmp_path) == [1, 2, 3, 4, 5, 6]

    # a tokenizer built for another data.vocab_size (the model's size unchanged) is refused on resume
    with pytest.raises(ConfigError, match="was trained with tokenizer .* pass a new --workdir"):
        train(_cfg("steps=8", "data.vocab_size=1024"), tmp_path, progress=False)
    assert _steps_logged(tmp_path) == [1, 2, 3, 4, 5, 6]
