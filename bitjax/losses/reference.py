"""The readable references: every loss computed from full (B, L, V) logits, the way a paper writes it.

Training never runs these (the step computes the same quantities block by block, bitjax.losses.chunked_head,
and from them the objectives' losses); the tests hold the chunked path to them, in float64 where they can.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike
from jaxtyping import Float, Int, Integer, Real

from bitjax.losses.divergences import Divergence, divergence
from bitjax.losses.objectives import ModelOutputs, SourceObjectives, batch_loss
from bitjax.losses.terms import (
    MASKED,
    TailMode,
    common_support,
    mean_logprob,
    redi,
    summed_negative_logprob,
    token_logprobs,
)
from bitjax.nn.quant import at_least_f32


def masked_mean(values_BL: Float[ArrayLike, "B L"], mask_BL: Real[ArrayLike, "B L"]) -> Float[ArrayLike, ""]:
    mask = mask_BL.astype(jnp.float32)
    return jnp.sum(values_BL * mask) / jnp.maximum(jnp.sum(mask), 1.0)

def cross_entropy(logits_BLV: Float[ArrayLike, "B L V"], targets_BL: Int[ArrayLike, "B L"],
                  mask_BL: Real[ArrayLike, "B L"]) -> Float[ArrayLike, ""]:
    """Next-token cross-entropy (nats per token) over the tokens where mask is 1."""
    per_token_BL = optax.softmax_cross_entropy_with_integer_labels(logits_BLV, targets_BL)
    return masked_mean(per_token_BL, mask_BL)

def summed_cross_entropy(logits_BLV: Float[ArrayLike, "B L V"], targets_BL: Int[ArrayLike, "B L"],
                         mask_BL: Real[ArrayLike, "B L"]) -> tuple[Float[ArrayLike, ""], Float[ArrayLike, ""]]:
    """Summed next-token cross-entropy over the masked tokens, and their count (for token-weighted means)."""
    return summed_negative_logprob(token_logprobs(logits_BLV, targets_BL), mask_BL)

def sparse_distributions(
    student_logits_BLV: Float[ArrayLike, "B L V"],
    teacher_ids_BLE: Integer[ArrayLike, "B L E"],
    teacher_logprobs_BLE: Float[ArrayLike, "B L E"],
    teacher_tail_logprob_BL: Float[ArrayLike, "B L"] | None = None,
    *,
    tail: TailMode = "bucket",
    temperature: float = 1.0,
) -> tuple[Float[ArrayLike, "B L U"], Float[ArrayLike, "B L U"]]:
    """Teacher and student log-probabilities on a common support U (E, or E + 1 with the tail bucket).

    The teacher's top-k log-probabilities (at temperature 1) are divided by `temperature`; with the
    tail bucket the teacher's leftover mass (`teacher_tail_logprob_BL` as cached, else `log(1 - sum)`)
    is one more outcome, tempered alike (an approximation for T != 1: the teacher's tail is known only
    as one number). The student's tail is exact: a log-sum-exp over its non-top-k logits.
    """
    t = jnp.float32(temperature)
    z_BLV = student_logits_BLV.astype(at_least_f32(student_logits_BLV.dtype)) / t
    log_norm_BL1 = jax.nn.logsumexp(z_BLV, axis=-1, keepdims=True)
    s_top_BLE = jnp.take_along_axis(z_BLV, teacher_ids_BLE, axis=-1) - log_norm_BL1
    s_tail_BL1 = None
    if tail == "bucket":
        in_top_BLV = _scatter_mask(teacher_ids_BLE, z_BLV.shape[-1])
        # A large finite fill rather than -inf keeps the gradient finite when the top k cover the vocabulary.
        s_tail_BL1 = jax.nn.logsumexp(jnp.where(in_top_BLV, MASKED, z_BLV), axis=-1, keepdims=True) - log_norm_BL1
    return common_support(s_top_BLE, s_tail_BL1, teacher_logprobs_BLE, teacher_tail_logprob_BL, tail, temperature)

def sparse_kd_per_token(
    student_logits_BLV: Float[ArrayLike, "B L V"],
    teacher_ids_BLE: Integer[ArrayLike, "B L E"],
    teacher_logprobs_BLE: Float[ArrayLike, "B L E"],
    teacher_tail_logprob_BL: Float[ArrayLike, "B L"] | None = None,
    *,
    kind: Divergence = "forward_kl",
    tail: TailMode = "bucket",
    temperature: float = 1.0,
    beta: float = 0.5,
    skew: float = 0.1,
) -> Float[ArrayLike, "B L"]:
    """The divergence against a top-k teacher at every position, times T^2 (unmasked)."""
    t_logp, s_logp = sparse_distributions(student_logits_BLV, teacher_ids_BLE, teacher_logprobs_BLE,
                                          teacher_tail_logprob_BL, tail=tail, temperature=temperature)
    return divergence(t_logp, s_logp, kind, beta=beta, skew=skew) * temperature**2

def sparse_kd_loss(
    student_logits_BLV: Float[ArrayLike, "B L V"],
    teacher_ids_BLE: Integer[ArrayLike, "B L E"],
    teacher_logprobs_BLE: Float[ArrayLike, "B L E"],
    mask_BL: Real[ArrayLike, "B L"],
    teacher_tail_logprob_BL: Float[ArrayLike, "B L"] | None = None,
    **kwargs,
) -> Float[ArrayLike, ""]:
    """Masked mean over tokens of the divergence against a top-k teacher, times T^2 (keywords as above)."""
    per_token_BL = sparse_kd_per_token(student_logits_BLV, teacher_ids_BLE, teacher_logprobs_BLE,
                                       teacher_tail_logprob_BL, **kwargs)
    return masked_mean(per_token_BL, mask_BL)

def dense_kd_loss(student_logits_BLV, teacher_logits_BLV, mask_BL, *, kind: Divergence = "forward_kl",
                  temperature: float = 1.0, beta: float = 0.5, skew: float = 0.1) -> Float[ArrayLike, ""]:
    """The reference: the same divergence against the full teacher distribution."""
    t = jnp.float32(temperature)
    t_logp = jax.nn.log_softmax(teacher_logits_BLV.astype(jnp.float32) / t, axis=-1)
    s_logp = jax.nn.log_softmax(student_logits_BLV.astype(jnp.float32) / t, axis=-1)
    return masked_mean(divergence(t_logp, s_logp, kind, beta=beta, skew=skew), mask_BL) * temperature**2

def redi_loss(
    positive_logits_BLV, positive_targets_BL, positive_mask_BL,
    negative_logits_BLV, negative_targets_BL, negative_mask_BL,
    *, alpha: float = 0.8,
) -> tuple[Float[ArrayLike, ""], dict]:
    """REDI over a batch of pairs given as two forward passes (row b of each is one pair), batch mean.

    The masks select completion tokens (prompt tokens carry no loss). Training packs a pair into one
    row instead (`redi_pair_rows`); both compute the same value.
    """
    pos = mean_logprob(token_logprobs(positive_logits_BLV, positive_targets_BL), positive_mask_BL)
    neg = mean_logprob(token_logprobs(negative_logits_BLV, negative_targets_BL), negative_mask_BL)
    return jnp.mean(redi(pos, neg, alpha)), {"redi/positive_logprob": jnp.mean(pos),
                                             "redi/negative_logprob": jnp.mean(neg)}

def completion_mask(prompt_lengths_B: Int[ArrayLike, " B"], lengths_B: Int[ArrayLike, " B"],
                    seq_len: int) -> Int[ArrayLike, "B L"]:
    """1 on the targets that are completion tokens, for inputs laid out `prompt + completion` from position 0.

    Target t predicts token t + 1, so it belongs to the completion when prompt_len - 1 <= t < length - 1.
    """
    t_L = jnp.arange(seq_len)[None, :]
    start_B1, end_B1 = (prompt_lengths_B - 1)[:, None], (lengths_B - 1)[:, None]
    return ((t_L >= start_B1) & (t_L < end_B1)).astype(jnp.int32)

def _scatter_mask(ids_BLE: Integer[ArrayLike, "B L E"], vocab: int) -> jax.Array:
    """(B, L, V) booleans, True at the top-k ids."""
    B, L, _ = ids_BLE.shape
    mask = jnp.zeros((B, L, vocab), dtype=bool)
    b_idx = jnp.arange(B)[:, None, None]
    l_idx = jnp.arange(L)[None, :, None]
    return mask.at[b_idx, l_idx, ids_BLE].set(True)


def token_quantities_from_logits(logits_BLV: Float[ArrayLike, "B L V"], batch: dict, table: SourceObjectives,
                                 distill_cfg) -> ModelOutputs:
    """The model outputs the objectives read, from full logits: the reference of bitjax.losses.chunked_head."""
    logp_BL = token_logprobs(logits_BLV, batch["targets"])
    if not table.needs_teacher():
        return ModelOutputs(logp_BL)
    d = distill_cfg
    kd_BL = sparse_kd_per_token(
        logits_BLV, batch["teacher_ids"], batch["teacher_logprobs"], batch["teacher_tail"], kind=d.kind,
        tail=d.tail, temperature=d.temperature, beta=d.beta, skew=d.skew)
    return ModelOutputs(logp_BL, kd_BL)


def batch_loss_from_logits(logits_BLV: Float[ArrayLike, "B L V"], batch: dict, table: SourceObjectives, distill_cfg,
                           step) -> tuple[jax.Array, dict[str, jax.Array]]:
    """`batch_loss` on full logits (the reference; the trainer uses the chunked head)."""
    return batch_loss(token_quantities_from_logits(logits_BLV, batch, table, distill_cfg), batch, table,
                      distill_cfg, step)
