"""The per-token loss terms the train step runs: log p(target), KD against a top-k teacher, REDI.

A teacher known only through its top-k log-probabilities per position (a cache, or an online teacher's
top-k) is compared with the student on a common support: the E top-k entries renormalised on both sides
("renormalize"), or those plus a tail bucket holding `1 - sum(top-k)` on both sides ("bucket"; TRL's
`_add_tail_bucket`, DistillKit's symmetric tail). The student side needs only its log-probabilities of the
top-k ids (bitjax.losses.chunked_head computes them block by block, never a (B, L, V) array); the divergence
is one of bitjax.losses.divergences.DIVERGENCES. Temperature T divides both sides' logits and the KD term is
multiplied by T^2. The same quantities from full logits, the readable references the tests compare
against, are bitjax.losses.reference.

Dimension letters: E the teacher's top-k entries per position (distill.k), U the common support (E, or
E + 1 with the tail bucket).
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike
from jaxtyping import Float, Int, Real

from bitjax.losses.divergences import Divergence, divergence
from bitjax.nn.quant import at_least_f32

TAIL_MODES = ("bucket", "renormalize")
TailMode = Literal[TAIL_MODES]
# The log-mass of an empty tail, and a masked logit: a large finite number rather than -inf keeps gradients finite.
MASKED = -1e30


def summed_negative_logprob(logp_BL: Float[ArrayLike, "B L"], mask_BL: Real[ArrayLike, "B L"]
                            ) -> tuple[Float[ArrayLike, ""], Float[ArrayLike, ""]]:
    """-sum of log p(target) over the masked tokens, and their count."""
    mask = mask_BL.astype(jnp.float32)
    return -jnp.sum(logp_BL * mask), jnp.sum(mask)

def topk_distributions(
    student_top_logp_BLE: Float[ArrayLike, "B L E"],
    vocab_size: int,
    teacher_logprobs_BLE: Float[ArrayLike, "B L E"],
    teacher_tail_logprob_BL: Float[ArrayLike, "B L"] | None = None,
    *,
    tail: TailMode = "bucket",
    temperature: float = 1.0,
) -> tuple[Float[ArrayLike, "B L U"], Float[ArrayLike, "B L U"]]:
    """`sparse_distributions` from the student's tempered log-probabilities on the top-k ids alone.

    The student's tail is `log(1 - sum exp(top-k))`, which equals the log-sum-exp over the non-top-k
    logits when the ids are distinct (cache rows; padding rows repeat id 0, see `student_tail_from_topk`).
    No (B, L, V) array is needed: the chunked head (bitjax.losses.chunked_head) calls this per block.
    """
    s_tail_BL1 = student_tail_from_topk(student_top_logp_BLE, vocab_size) if tail == "bucket" else None
    return common_support(student_top_logp_BLE, s_tail_BL1, teacher_logprobs_BLE, teacher_tail_logprob_BL,
                           tail, temperature)

def student_tail_from_topk(top_logp_BLE: Float[ArrayLike, "B L E"], vocab_size: int) -> Float[ArrayLike, "B L 1"]:
    """log of the student's mass outside the top k, `log(-expm1(logsumexp(top-k)))`, guarded.

    With k >= V the tail is empty: `MASKED`, the value of the masked reference. Otherwise the mass is
    resolved only to about eps * |log-probs| (it is 1 minus a rounded sum), so it is floored at the dtype's
    eps. The floor is also the guard: rows whose top-k mass rounds to >= 1, or exceeds 1 because padding
    repeats id 0 k times, would take the log of a number <= 0; `maximum` keeps value and gradient finite
    there (a `where` around the log alone would still send NaN back through the untaken branch). Above
    the floor this equals the masked reference to rounding; below it the reference is exact and this is not.
    """
    if top_logp_BLE.shape[-1] >= vocab_size:
        return jnp.full(top_logp_BLE.shape[:-1] + (1,), MASKED, top_logp_BLE.dtype)
    log_top_BL1 = jax.nn.logsumexp(top_logp_BLE, axis=-1, keepdims=True)
    return jnp.log(jnp.maximum(-jnp.expm1(log_top_BL1), jnp.finfo(top_logp_BLE.dtype).eps))

def common_support(s_top_BLE, s_tail_BL1, teacher_logprobs_BLE, teacher_tail_logprob_BL, tail, temperature):
    """Teacher and student log-probabilities on the support of `tail` (the student's side already tempered)."""
    t = jnp.float32(temperature)
    t_top_BLE = teacher_logprobs_BLE.astype(jnp.float32)
    if tail == "renormalize":
        t_top_BLE = t_top_BLE / t
        return (jax.nn.log_softmax(t_top_BLE, axis=-1), jax.nn.log_softmax(s_top_BLE, axis=-1))
    if tail != "bucket":
        raise ValueError(f"tail={tail!r}; use 'bucket' or 'renormalize'")
    # Teacher: log(1 - sum p_top), computed in log space; then temper the k + 1 outcomes and renormalise.
    if teacher_tail_logprob_BL is None:
        t_tail_BL1 = _log1mexp(jax.nn.logsumexp(t_top_BLE, axis=-1, keepdims=True))
    else:
        t_tail_BL1 = teacher_tail_logprob_BL.astype(jnp.float32)[..., None]
    t_all_BLU = jax.nn.log_softmax(jnp.concatenate([t_top_BLE, t_tail_BL1], axis=-1) / t, axis=-1)
    s_all_BLU = jnp.concatenate([s_top_BLE, s_tail_BL1], axis=-1)
    return t_all_BLU, s_all_BLU

def topk_kd_per_token(
    student_top_logp_BLE: Float[ArrayLike, "B L E"],
    vocab_size: int,
    teacher_logprobs_BLE: Float[ArrayLike, "B L E"],
    teacher_tail_logprob_BL: Float[ArrayLike, "B L"] | None = None,
    *,
    kind: Divergence = "forward_kl",
    tail: TailMode = "bucket",
    temperature: float = 1.0,
    beta: float = 0.5,
    skew: float = 0.1,
) -> Float[ArrayLike, "B L"]:
    """`sparse_kd_per_token` from the student's tempered log-probabilities on the teacher's top-k ids."""
    t_logp, s_logp = topk_distributions(student_top_logp_BLE, vocab_size, teacher_logprobs_BLE,
                                        teacher_tail_logprob_BL, tail=tail, temperature=temperature)
    return divergence(t_logp, s_logp, kind, beta=beta, skew=skew) * temperature**2

def kd_weight(step: jax.Array | int, final_weight: float, warmup_steps: int = 0) -> jax.Array:
    """Weight a of the KD term in `a * KD + (1 - a) * CE`: a linear ramp from 0 to `final_weight`."""
    if warmup_steps <= 0:
        return jnp.asarray(final_weight, jnp.float32)
    return final_weight * jnp.minimum(jnp.asarray(step, jnp.float32) / warmup_steps, 1.0)

def token_logprobs(logits_BLV: Float[ArrayLike, "B L V"], targets_BL: Int[ArrayLike, "B L"]) -> Float[ArrayLike, "B L"]:
    """log p(target) at every position."""
    return -optax.softmax_cross_entropy_with_integer_labels(logits_BLV.astype(at_least_f32(logits_BLV.dtype)),
                                                           targets_BL)

def mean_logprob(logp_BL: Float[ArrayLike, "B L"], mask_BL: Real[ArrayLike, "B L"]) -> Float[ArrayLike, " B"]:
    """Length-normalised log-likelihood of each row's masked tokens: log p(y | x) / |y|."""
    mask = mask_BL.astype(jnp.float32)
    return jnp.sum(logp_BL * mask, axis=-1) / jnp.maximum(jnp.sum(mask, axis=-1), 1.0)

def redi(positive_mean_logprob_B, negative_mean_logprob_B, alpha: float = 0.8) -> Float[ArrayLike, " B"]:
    """REDI (arXiv 2505.24850) per pair: `-log p(y_w|x)/|y_w| + alpha * log p(y_l|x)/|y_l|`."""
    return -positive_mean_logprob_B + alpha * negative_mean_logprob_B

def redi_pair_rows(logp_BL: Float[ArrayLike, "B L"], mask_BL: Real[ArrayLike, "B L"],
                   segment_ids_BL: Int[ArrayLike, "B L"], alpha: float = 0.8
                   ) -> tuple[Float[ArrayLike, " B"], Float[ArrayLike, " B"], Float[ArrayLike, " B"]]:
    """REDI for rows that hold a pair: segment 1 the positive, segment 2 the negative completion.

    Returns REDI per row and the two mean log-probabilities.
    """
    pos = mean_logprob(logp_BL, mask_BL * (segment_ids_BL == 1))
    neg = mean_logprob(logp_BL, mask_BL * (segment_ids_BL == 2))
    return redi(pos, neg, alpha), pos, neg

def _log1mexp(log_x: jax.Array) -> jax.Array:
    """log(1 - exp(log_x)) for log_x <= 0, stable near both ends; -inf when exp(log_x) >= 1."""
    log_x = jnp.minimum(log_x, 0.0)
    return jnp.where(log_x > -0.693, jnp.log(-jnp.expm1(log_x)), jnp.log1p(-jnp.exp(log_x)))
