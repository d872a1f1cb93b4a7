"""How the rows of a mixed batch become one loss: every source has an objective and a loss weight.

Each row carries the index of its source (`source_id`). Per source s present in the batch:
  "ce", "sft"  L_s = mean next-token cross-entropy over the source's trained tokens (prompts are masked)
  "kd"         L_s = w * KD_s + (1 - w) * CE_s, KD_s the mean divergence from the cached teacher top-k
               (bitjax.distill), w = distill.kd_weight ramped over distill.kd_warmup_steps
  "redi"       L_s = mean over the source's pair rows of REDI (arXiv 2505.24850):
               -log p(y_w | x) / |y_w| + alpha * log p(y_l | x) / |y_l|, segment 1 = y_w, segment 2 = y_l
and the batch loss is  sum_s loss_weight_s * (rows_s / B) * L_s.  With one "ce" source this is plain
token-mean cross-entropy; in general each source counts in proportion to its rows in the batch (its
mixing weight, on average) times its loss weight. Per-source losses are reported as `loss/<name>`.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from bitjax import distill
from bitjax.config import TrainConfig


@dataclasses.dataclass(frozen=True)
class SourceObjectives:
    """The static table the loss reads: per source index, its name, objective and loss weight."""

    names: tuple[str, ...]
    objectives: tuple[str, ...]
    loss_weights: tuple[float, ...]

    @classmethod
    def from_config(cls, cfg: TrainConfig) -> "SourceObjectives":
        src = cfg.data.sources
        return cls(tuple(s.name for s in src), tuple(s.resolved_objective for s in src),
                   tuple(float(s.loss_weight) for s in src))

    def uses(self, objective: str) -> bool:
        return objective in self.objectives

    def mask(self, *objectives: str) -> jax.Array:
        return jnp.asarray([o in objectives for o in self.objectives], jnp.float32)


def batch_loss(logits_BLV: Float[Array, "B L V"], batch: dict, table: SourceObjectives, cfg: TrainConfig,
               step) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The batch loss and its parts: `ce`, `kd`, `kd_weight`, `redi`, `redi/*` and `loss/<source>`.

    A part whose rows are absent from the batch is NaN (the trainer leaves it out of the logs); the
    loss itself is always finite for finite logits.
    """
    d = cfg.distill
    mask_BL = batch["loss_mask"].astype(jnp.float32)
    onehot_BS = jax.nn.one_hot(batch["source_id"], len(table.names), dtype=jnp.float32)
    rows_S = jnp.sum(onehot_BS, axis=0)
    logp_BL = distill.token_logprobs(logits_BLV, batch["targets"])
    ce_BL = -logp_BL

    tokens_S = onehot_BS.T @ jnp.sum(mask_BL, axis=-1)

    def per_source_token_mean(values_BL):
        return (onehot_BS.T @ jnp.sum(values_BL * mask_BL, axis=-1)) / jnp.maximum(tokens_S, 1.0)

    ce_S = per_source_token_mean(ce_BL)
    loss_S = ce_S
    metrics = {"ce": _weighted_mean(ce_S, table.mask("ce", "sft", "kd") * tokens_S)}
    if table.uses("kd"):
        kd_BL = distill.sparse_kd_per_token(
            logits_BLV, batch["teacher_ids"], batch["teacher_logprobs"], batch["teacher_tail"], kind=d.kind,
            tail=d.tail, temperature=d.temperature, beta=d.beta, skew=d.skew)
        kd_S = per_source_token_mean(kd_BL)
        w = distill.kd_weight(step, d.kd_weight, d.kd_warmup_steps)
        is_kd_S = table.mask("kd")
        loss_S = jnp.where(is_kd_S > 0, w * kd_S + (1.0 - w) * ce_S, loss_S)
        metrics.update(kd=_weighted_mean(kd_S, is_kd_S * tokens_S), kd_weight=w)
    if table.uses("redi"):
        redi_B, pos_B, neg_B = distill.redi_pair_rows(logp_BL, mask_BL, batch["segment_ids"], d.redi_alpha)
        redi_S = (onehot_BS.T @ redi_B) / jnp.maximum(rows_S, 1.0)
        is_redi_S = table.mask("redi")
        loss_S = jnp.where(is_redi_S > 0, redi_S, loss_S)
        redi_rows_B = onehot_BS @ is_redi_S
        metrics.update({"redi": _weighted_mean(redi_S, is_redi_S * rows_S),
                        "redi/positive_logprob": _weighted_mean(pos_B, redi_rows_B),
                        "redi/negative_logprob": _weighted_mean(neg_B, redi_rows_B)})
    weights_S = jnp.asarray(table.loss_weights, jnp.float32) * rows_S / batch["source_id"].shape[0]
    loss = jnp.sum(weights_S * loss_S)
    for s, name in enumerate(table.names):
        metrics[f"loss/{name}"] = jnp.where(rows_S[s] > 0, loss_S[s], jnp.nan)
    return loss, metrics


def _weighted_mean(values, weights):
    """NaN when nothing carries weight: a metric of rows absent from this batch (left out of the logs)."""
    total = jnp.sum(weights)
    return jnp.where(total > 0, jnp.sum(values * weights) / jnp.maximum(total, 1e-9), jnp.nan)
