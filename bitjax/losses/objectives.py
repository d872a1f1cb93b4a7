"""What the student learns from each source: the objectives, and how the rows of a mixed batch become one loss.

Each row carries the index of its source (`source_id`). Per source s present in the batch:
  "ce", "sft"  L_s = mean next-token cross-entropy over the source's trained tokens (prompts are masked)
  "kd"         L_s = w * KD_s + (1 - w) * CE_s (+ distill.relation_weight * REL_s), KD_s the mean divergence
               from the teacher's top-k (bitjax.losses), w = distill.kd_weight ramped over
               distill.kd_warmup_steps; REL_s the mean attention-relation loss (bitjax.relation_loss), online only
  "redi"       L_s = mean over the source's pair rows of REDI (arXiv 2505.24850):
               -log p(y_w | x) / |y_w| + alpha * log p(y_l | x) / |y_l|, segment 1 = y_w, segment 2 = y_l
and the batch loss is  sum_s loss_weight_s * (rows_s / B) * L_s.  With one "ce" source this is plain
token-mean cross-entropy; in general each source counts in proportion to its rows in the batch (its
mixing weight, on average) times its loss weight. Per-source losses are reported as `loss/<name>`.

`OBJECTIVES` is the one table of objectives: the config validates against it, the data pipeline builds each
source's rows by its `rows`, and `batch_loss` calls its `loss`. An objective whose rows are built like an
existing one's is added here alone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Literal

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike
from jaxtyping import Float

from bitjax.losses import terms as losses

#   packed_text         documents packed into sequences (data.packing)
#   teacher_cache       the sequences of the teacher top-k cache, with its teacher fields
#   packed_completions  prompt/completion documents of positive traces, packed first-fit (kept whole)
#   trace_pairs         one row per positive/negative pair of traces, segment 1 and segment 2
RowKind = Literal["packed_text", "teacher_cache", "packed_completions", "trace_pairs"]


@dataclasses.dataclass(frozen=True)
class BatchView:
    """What every objective's loss reads: the batch, the student's per-token quantities, and per-source sums."""

    batch: dict
    logp_BL: jax.Array          # log p(target) at every position
    kd_BL: jax.Array | None     # KD divergence from the teacher's top-k times T^2 (batches with teacher fields)
    mask_BL: jax.Array          # float32 loss mask
    onehot_BS: jax.Array        # row -> source
    distill: object             # the run's DistillConfig
    step: ArrayLike             # the train step (drives the KD weight ramp)
    relation_BL: jax.Array | None = None   # attention-relation loss per token (online teacher, relation_weight > 0)

    @property
    def tokens_S(self) -> jax.Array:
        return self.onehot_BS.T @ jnp.sum(self.mask_BL, axis=-1)

    @property
    def rows_S(self) -> jax.Array:
        return jnp.sum(self.onehot_BS, axis=0)

    def token_mean_S(self, values_BL: jax.Array) -> jax.Array:
        """Per source, the mean of a per-token value over its trained tokens."""
        return (self.onehot_BS.T @ jnp.sum(values_BL * self.mask_BL, axis=-1)) / jnp.maximum(self.tokens_S, 1.0)

    def row_mean_S(self, values_B: jax.Array) -> jax.Array:
        """Per source, the mean of a per-row value over its rows."""
        return (self.onehot_BS.T @ values_B) / jnp.maximum(self.rows_S, 1.0)


def _cross_entropy(v: BatchView, is_S) -> tuple[jax.Array, dict]:
    return v.token_mean_S(-v.logp_BL), {}


def _distillation(v: BatchView, is_S) -> tuple[jax.Array, dict]:
    d = v.distill
    kd_S = v.token_mean_S(v.kd_BL)
    w = losses.kd_weight(v.step, d.kd_weight, d.kd_warmup_steps)
    loss_S = w * kd_S + (1.0 - w) * v.token_mean_S(-v.logp_BL)
    metrics = {"kd": _weighted_mean(kd_S, is_S * v.tokens_S), "kd_weight": w}
    if v.relation_BL is not None:
        relation_S = v.token_mean_S(v.relation_BL)
        loss_S = loss_S + d.relation_weight * relation_S
        metrics["relation"] = _weighted_mean(relation_S, is_S * v.tokens_S)
    return loss_S, metrics


def _redi(v: BatchView, is_S) -> tuple[jax.Array, dict]:
    redi_B, pos_B, neg_B = losses.redi_pair_rows(v.logp_BL, v.mask_BL, v.batch["segment_ids"],
                                                 v.distill.redi_alpha)
    redi_S = v.row_mean_S(redi_B)
    redi_rows_B = v.onehot_BS @ is_S
    return redi_S, {"redi": _weighted_mean(redi_S, is_S * v.rows_S),
                    "redi/positive_logprob": _weighted_mean(pos_B, redi_rows_B),
                    "redi/negative_logprob": _weighted_mean(neg_B, redi_rows_B)}


@dataclasses.dataclass(frozen=True)
class Objective:
    """One way to learn from a source."""

    reads: Literal["text", "traces"]     # the kind of source it applies to
    rows: RowKind                        # how the data pipeline builds its rows
    loss: Callable[[BatchView, jax.Array], tuple[jax.Array, dict]]   # (view, is-this-objective (S,)) -> (L_S, metrics)
    teacher: bool = False                # rows carry a teacher's cached top-k
    token_level: bool = True             # its CE over trained tokens counts in the `ce` metric
    doc: str = ""


OBJECTIVES: dict[str, Objective] = {
    "ce": Objective("text", "packed_text", _cross_entropy, doc="next-token cross-entropy"),
    "kd": Objective("text", "teacher_cache", _distillation, teacher=True,
                    doc="distillation from the teacher's cached top-k, mixed with CE by distill.kd_weight"),
    "sft": Objective("traces", "packed_completions", _cross_entropy, doc="CE on the completions of positive traces"),
    "redi": Objective("traces", "trace_pairs", _redi, token_level=False,
                      doc="REDI on positive/negative trace pairs"),
}
ObjectiveName = Literal[("",) + tuple(OBJECTIVES)]
DEFAULT_OBJECTIVE = {"text": "ce", "traces": "sft"}   # by the kind of source, when a source names none


@dataclasses.dataclass(frozen=True)
class SourceObjectives:
    """The static table the loss reads: per source index, its name, objective and loss weight."""

    names: tuple[str, ...]
    objectives: tuple[str, ...]
    loss_weights: tuple[float, ...]

    @classmethod
    def from_config(cls, cfg) -> "SourceObjectives":
        """From a TrainConfig's row sources (its data sources, then the `<name>.ce` rows of "kd" sources
        whose text continues under CE after their cache: DataConfig.row_sources)."""
        src = cfg.data.row_sources()
        return cls(tuple(s.name for s in src), tuple(s.resolved_objective for s in src),
                   tuple(float(s.loss_weight) for s in src))

    def uses(self, objective: str) -> bool:
        return objective in self.objectives

    def needs_teacher(self) -> bool:
        """Whether some source's rows carry teacher top-k fields (then every row of the batch does)."""
        return any(OBJECTIVES[o].teacher for o in self.objectives)

    def mask(self, predicate: Callable[[str], bool]) -> jax.Array:
        """(S,) float32: 1 for the sources whose objective name satisfies `predicate`."""
        return jnp.asarray([predicate(o) for o in self.objectives], jnp.float32)


def token_quantities_from_logits(logits_BLV: Float[ArrayLike, "B L V"], batch: dict, table: SourceObjectives,
                                 distill_cfg) -> tuple[jax.Array, jax.Array | None]:
    """What `batch_loss` reads, from full logits: the readable reference of bitjax.fused_head."""
    logp_BL = losses.token_logprobs(logits_BLV, batch["targets"])
    if not table.needs_teacher():
        return logp_BL, None
    d = distill_cfg
    kd_BL = losses.sparse_kd_per_token(
        logits_BLV, batch["teacher_ids"], batch["teacher_logprobs"], batch["teacher_tail"], kind=d.kind,
        tail=d.tail, temperature=d.temperature, beta=d.beta, skew=d.skew)
    return logp_BL, kd_BL


def batch_loss_from_logits(logits_BLV: Float[ArrayLike, "B L V"], batch: dict, table: SourceObjectives, distill_cfg,
                           step) -> tuple[jax.Array, dict[str, jax.Array]]:
    """`batch_loss` on full logits (the reference; the trainer uses the chunked head)."""
    logp_BL, kd_BL = token_quantities_from_logits(logits_BLV, batch, table, distill_cfg)
    return batch_loss(logp_BL, kd_BL, batch, table, distill_cfg, step)


def batch_loss(logp_BL: Float[ArrayLike, "B L"], kd_BL: Float[ArrayLike, "B L"] | None, batch: dict,
               table: SourceObjectives, distill_cfg, step, relation_BL: Float[ArrayLike, "B L"] | None = None
               ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The batch loss and its parts: `ce`, each objective's metrics (`kd`, `redi`, ...) and `loss/<source>`.

    `logp_BL`: log p(target) per token; `kd_BL`: the per-token KD divergence times T^2, present when the
    batch has teacher fields (bitjax.fused_head computes both without full logits). `distill_cfg`: the run's
    DistillConfig. `relation_BL`: the attention-relation loss per token (bitjax.relation_loss), when used.
    A part whose rows are absent from the batch is NaN (the trainer leaves it out of the logs); the loss
    itself is always finite for finite inputs.
    """
    view = BatchView(batch, logp_BL, kd_BL, jnp.asarray(batch["loss_mask"], jnp.float32),
                     jax.nn.one_hot(batch["source_id"], len(table.names), dtype=jnp.float32), distill_cfg, step,
                     relation_BL)
    token_level_S = table.mask(lambda o: OBJECTIVES[o].token_level)
    metrics = {"ce": _weighted_mean(view.token_mean_S(-view.logp_BL), token_level_S * view.tokens_S)}
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


def _weighted_mean(values, weights):
    """NaN when nothing carries weight: a metric of rows absent from this batch (left out of the logs)."""
    total = jnp.sum(weights)
    return jnp.where(total > 0, jnp.sum(values * weights) / jnp.maximum(total, 1e-9), jnp.nan)
