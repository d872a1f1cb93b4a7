"""How the rows of a mixed batch become one loss, each row by its source's objective.

Each row carries the index of its source (`source_id`). Per source s present in the batch its objective
gives L_s (see each objective's module), and the batch loss is

    sum_s loss_weight_s * (rows_s / B) * L_s.

With one "ce" source this is plain token-mean cross-entropy; in general each source counts in proportion to
its rows in the batch (its mixing weight, on average) times its loss weight. Per-source losses are reported
as `loss/<name>`, and `ce` is the cross-entropy over the trained tokens of every token-level objective.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

from bitjax.losses.objectives.base import BatchView, ModelOutputs, Needs, weighted_mean
from bitjax.losses.objectives.table import OBJECTIVES


@dataclasses.dataclass(frozen=True)
class SourceObjectives:
    """The static table the loss reads: per source index, its name, objective and loss weight."""

    names: tuple[str, ...]
    objectives: tuple[str, ...]
    loss_weights: tuple[float, ...]

    @classmethod
    def from_config(cls, cfg) -> SourceObjectives:
        """From a TrainConfig's row sources (its data sources, then the `<name>.ce` rows of "kd" sources
        whose text continues under CE after their cache: DataConfig.row_sources)."""
        src = cfg.data.row_sources()
        return cls(tuple(s.name for s in src), tuple(s.resolved_objective for s in src),
                   tuple(float(s.loss_weight) for s in src))

    def uses(self, objective: str) -> bool:
        return objective in self.objectives

    def needs_teacher(self) -> bool:
        """Whether some source's rows learn from the teacher's top-k (then every row of the batch has its fields)."""
        return any(OBJECTIVES[o].teacher for o in self.objectives)

    def needs(self, distill) -> Needs:
        """The model outputs the step computes: what the objectives of this run read, together."""
        return functools.reduce(Needs.__or__, (OBJECTIVES[o].needs(distill) for o in set(self.objectives)), Needs())

    def mask(self, predicate: Callable[[str], bool]) -> jax.Array:
        """(S,) float32: 1 for the sources whose objective name satisfies `predicate`."""
        return jnp.asarray([predicate(o) for o in self.objectives], jnp.float32)


def batch_loss(outputs: ModelOutputs, batch: dict, table: SourceObjectives, distill_cfg, step
               ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The batch loss and its parts: `ce`, each objective's metrics (`kd`, `redi`, ...) and `loss/<source>`.

    `outputs`: what the step computed for the objectives (bitjax.training.model_outputs; the logits
    reference is bitjax.losses.reference). `distill_cfg`: the run's DistillConfig. A part whose rows are
    absent from the batch is NaN (the trainer leaves it out of the logs); the loss itself is always finite
    for finite inputs.
    """
    view = BatchView(batch, outputs, jnp.asarray(batch["loss_mask"], jnp.float32),
                     jax.nn.one_hot(batch["source_id"], len(table.names), dtype=jnp.float32), distill_cfg, step)
    token_level_S = table.mask(lambda o: OBJECTIVES[o].token_level)
    metrics = {"ce": weighted_mean(view.token_mean_S(-view.logp_BL), token_level_S * view.tokens_S)}
    loss_S = jnp.zeros(len(table.names), jnp.float32)
    for name in dict.fromkeys(table.objectives):     # each objective once, in source order
        is_S = table.mask(lambda o, name=name: o == name)
        objective_loss_S, objective_metrics = OBJECTIVES[name].loss(view, is_S)
        loss_S = jnp.where(is_S > 0, objective_loss_S, loss_S)
        metrics.update(objective_metrics)
    rows_S = view.rows_S
    weights_S = jnp.asarray(table.loss_weights, jnp.float32) * rows_S / batch["source_id"].shape[0]
    loss = jnp.sum(weights_S * loss_S)
    for s, name in enumerate(table.names):
        metrics[f"loss/{name}"] = jnp.where(rows_S[s] > 0, loss_S[s], jnp.nan)
    return loss, metrics
