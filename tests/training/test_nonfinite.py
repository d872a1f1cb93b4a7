"""The non-finite guard: a step whose update is not finite is never saved, even when its loss is finite.

The faults are real ones inside the jitted step: an infinite gradient (which clip_by_global_norm turns into a
NaN update while the step's loss, computed before the update, stays finite), or a NaN loss.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bitjax.config import apply_overrides, load_recipe
from bitjax.errors import TrainingError
from bitjax.training import Trainer, nonfinite, train
from bitjax.training import trainer as train_lib
from bitjax.training.checkpointer import Checkpointer
from tests.support import TINY


def _config(steps, *extra):
    return apply_overrides(load_recipe(TINY), [
        "model.n_layers=1", "data.seq_len=32", "data.batch_size=2", f"steps={steps}", "checkpoint.every=1",
        f"checkpoint.keep={steps + 1}", "checkpoint.async_save=false", "log_every=100", "eval_batches=1",
        "eval_every=1000", *extra])


@jax.custom_vjp
def _infinite_gradient(x, on):
    """The identity whose gradient is infinite where `on`: a finite loss with an infinite gradient."""
    return x


def _forward(x, on):
    return x, on


def _backward(on, g):
    return g * jnp.where(on, jnp.inf, 1.0), None


_infinite_gradient.defvjp(_forward, _backward)


def _poison(monkeypatch, bad_steps, *, loss=False):
    """Steps in `bad_steps` (1-based) get an infinite gradient, or a NaN loss when `loss`."""
    original = Trainer.loss

    def poisoned(self, params, batch, lam, step, teacher_params=None):
        on = jnp.isin(step + 1, jnp.asarray(bad_steps))
        if not loss:
            params = jax.tree.map(lambda p: _infinite_gradient(p, on), params)
        value, aux = original(self, params, batch, lam, step, teacher_params)
        return (jnp.where(on, jnp.nan, value) if loss else value), aux

    monkeypatch.setattr(train_lib.Trainer, "loss", poisoned)


def _saved_states(workdir, cfg):
    ckpt = Checkpointer(workdir / "checkpoints", cfg)
    abstract = Trainer.create(cfg).abstract_state()
    states = {step: ckpt.restore_state(step, abstract) for step in ckpt.all_steps()}
    ckpt.close()
    return states


def _all_finite(state) -> bool:
    return all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves((state.params, state.opt_state))
               if np.issubdtype(np.asarray(x).dtype, np.inexact))


def test_a_finite_loss_with_a_non_finite_update_is_never_saved(tmp_path, monkeypatch):
    """Step 4's loss is finite and its gradient infinite: the run stops naming step 4 and the gradient norm; every
    checkpoint holds finite values and the newest is step 3's (before the guard, step 4's NaN state was saved
    at its scheduled save and called the last good checkpoint)."""
    _poison(monkeypatch, [4])
    cfg = _config(6)
    with pytest.raises(TrainingError) as info:
        train(cfg, tmp_path, progress=False)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("step 4: the gradient norm became inf"), message
    assert "last finite checkpoint (step 3) is kept" in message, message
    states = _saved_states(tmp_path, cfg)
    assert sorted(states) == [1, 2, 3]
    assert all(_all_finite(state) for state in states.values())


def test_a_nan_loss_stops_the_run_naming_the_loss(tmp_path, monkeypatch):
    _poison(monkeypatch, [3], loss=True)
    cfg = _config(4)
    with pytest.raises(TrainingError, match=r"^step 3: the loss became nan; .*last finite checkpoint \(step 2\)"):
        train(cfg, tmp_path, progress=False)
    assert sorted(_saved_states(tmp_path, cfg)) == [1, 2]


def test_skip_drops_the_bad_update_and_counts_it(tmp_path, monkeypatch):
    """on_nonfinite=skip: step 3's update is dropped (its state equals step 2's, Adam's count included), the
    run finishes with finite checkpoints and logs one skipped step."""
    _poison(monkeypatch, [3])
    cfg = _config(4, "on_nonfinite=skip", "log_every=1")
    summary = train(cfg, tmp_path, progress=False)
    assert summary["steps"] == 4
    states = _saved_states(tmp_path, cfg)
    assert all(_all_finite(state) for state in states.values())
    for a, b in zip(jax.tree.leaves((states[2].params, states[2].opt_state)),
                    jax.tree.leaves((states[3].params, states[3].opt_state))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert int(states[3].step) == 3
    assert any(not np.array_equal(np.asarray(a), np.asarray(b))
               for a, b in zip(jax.tree.leaves(states[3].params), jax.tree.leaves(states[4].params)))
    import json
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["skipped_steps"] for r in records if "skipped_steps" in r][-1] == 1


def test_skip_stops_after_too_many_in_a_row(tmp_path, monkeypatch):
    _poison(monkeypatch, [3, 4, 5])
    cfg = _config(6, "on_nonfinite=skip", "max_skips_in_a_row=3")
    with pytest.raises(TrainingError, match=r"^steps 3-5: 3 updates in a row were not finite.*those of step 2"):
        train(cfg, tmp_path, progress=False)
    states = _saved_states(tmp_path, cfg)
    assert all(_all_finite(state) for state in states.values())


def test_the_code_names_the_first_non_finite_value():
    """The step's one scalar points at the loss, the gradient norm, a parameter or a moment, in that order."""
    params = {"a": jnp.ones(3), "b": {"kernel": jnp.ones((2, 2))}}
    opt_state = ({"mu": {"a": jnp.zeros(3)}}, jnp.zeros((), jnp.int32))
    names = nonfinite.watched_names(params, opt_state)
    code = lambda *args: int(nonfinite.first_nonfinite(*args))   # noqa: E731
    assert code(1.0, 1.0, params, opt_state) == 0
    assert names[code(jnp.nan, jnp.inf, params, opt_state) - 1] == "loss"
    assert names[code(1.0, jnp.inf, params, opt_state) - 1] == "gradient norm"
    bad = {"a": jnp.ones(3), "b": {"kernel": jnp.array([[1.0, jnp.inf], [0.0, 0.0]])}}
    assert names[code(1.0, 1.0, bad, opt_state) - 1] == "parameter b.kernel"
    bad_moment = ({"mu": {"a": jnp.array([0.0, jnp.nan, 0.0])}}, jnp.zeros((), jnp.int32))
    assert names[code(1.0, 1.0, params, bad_moment) - 1] == "optimizer state 0.mu.a"
