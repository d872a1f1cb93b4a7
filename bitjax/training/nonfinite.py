"""The non-finite guard: a step whose loss, gradient norm or updated state is not finite is never saved.

The step's loss is computed from the parameters *before* its update, so checking the loss alone lets a finite
loss with an infinite gradient (clip_by_global_norm then multiplies by 0 * inf) put NaN into the parameters
unseen until the next step. The jitted step therefore checks everything it produces: `first_nonfinite` reduces
the loss, the gradient norm and every floating leaf of the new parameters and optimizer state to one int32
scalar (0: all finite, else 1 + the index of the first non-finite value in `watched_names`), returned with the
step's metrics. No state is brought to the host for it; the loop reads the scalar with the other metrics, and
always before a checkpoint is written.

Policies (`TrainConfig.on_nonfinite`):
  stop   the run stops at the first bad step, before anything from that state is saved (the default)
  skip   the bad update is dropped inside the step (parameters and optimizer state stay as they were, the batch
         is consumed, as optax.apply_if_finite does), skipped steps are counted, and the run stops after
         `max_skips_in_a_row` consecutive skips
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from bitjax.errors import TrainingError
from bitjax.nn.layer_stack import path_name

LOSS, GRAD_NORM = "loss", "gradient norm"


def _floating_leaves(prefix: str, tree) -> list[tuple[str, jax.Array]]:
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return [(f"{prefix} {path_name(path)}", leaf) for path, leaf in flat if jnp.issubdtype(leaf.dtype, jnp.inexact)]


def watched_names(params, opt_state) -> list[str]:
    """What the code `first_nonfinite` returns points into: loss, gradient norm, each parameter and moment."""
    return [LOSS, GRAD_NORM] + [name for name, _ in _floating_leaves("parameter", params)
                                + _floating_leaves("optimizer state", opt_state)]


def first_nonfinite(loss: jax.Array, grad_norm: jax.Array, params, opt_state) -> jax.Array:
    """() int32: 0 when every watched value is finite, else 1 + the index of the first one that is not."""
    leaves = [loss, grad_norm] + [leaf for _, leaf in _floating_leaves("parameter", params)
                                  + _floating_leaves("optimizer state", opt_state)]
    finite_W = jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in leaves])
    return jnp.where(jnp.all(finite_W), 0, jnp.argmin(finite_W) + 1).astype(jnp.int32)


def keep_if_finite(code: jax.Array, new, old):
    """`new` where the step's values are all finite (code 0), else `old`, leaf by leaf: the skip policy."""
    return jax.tree.map(lambda n, o: jnp.where(code == 0, n, o), new, old)


class NonfiniteGuard:
    """The host side: reads each step's code (with its loss and gradient norm) in order, and stops the run."""

    def __init__(self, names: list[str], policy: str, max_skips_in_a_row: int):
        self.names, self.policy, self.max_skips_in_a_row = names, policy, max_skips_in_a_row
        self.skipped = 0          # steps skipped by this process's run
        self.in_a_row = 0
        self.first_of_row: tuple[int, str] | None = None

    def what(self, code: int, metrics: dict) -> str:
        name = self.names[code - 1]
        if name == LOSS:
            return f"the loss became {float(metrics['loss'])}"
        if name == GRAD_NORM:
            return f"the gradient norm became {float(metrics['grad_norm'])} (loss {float(metrics['loss']):.4g})"
        return (f"the update made {name} non-finite (loss {float(metrics['loss']):.4g}, gradient norm "
                f"{float(metrics['grad_norm']):.4g})")

    def observe(self, step: int, metrics: dict, kept: str) -> None:
        """Check one step's metrics; `kept` says which checkpoint is the last finite one (for the message)."""
        code = int(np.asarray(metrics["nonfinite"]))
        if code == 0:
            self.in_a_row, self.first_of_row = 0, None
            return
        if self.policy == "stop":
            raise TrainingError(
                f"step {step}: {self.what(code, metrics)}; nothing from step {step} on is saved and {kept}. Check "
                "the data first (token ids inside the vocabulary, finite teacher-cache values), then the learning "
                "rate (--set optim.peak_lr=...), or drop such updates with --set on_nonfinite=skip, and rerun the "
                "same command")
        self.skipped += 1
        self.in_a_row += 1
        self.first_of_row = self.first_of_row or (step, self.what(code, metrics))
        if self.in_a_row >= self.max_skips_in_a_row:
            first_step, first_what = self.first_of_row
            raise TrainingError(
                f"steps {first_step}-{step}: {self.in_a_row} updates in a row were not finite and were skipped "
                f"(at step {first_step} {first_what}); the parameters are those of step {first_step - 1} and "
                f"{kept}. Check the data and the learning rate (--set optim.peak_lr=...), or allow more with "
                "--set max_skips_in_a_row=N, and rerun the same command")
