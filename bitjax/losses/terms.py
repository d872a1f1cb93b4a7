"""Loss terms: cross-entropy, distillation against a top-k teacher (every divergence), trace SFT and REDI.

Every term takes float32 logits (B, L, V) and returns per-token values (B, L) or a masked mean over
tokens. Sparse knowledge-distillation terms compare the student with a teacher known only through its
top-k log-probabilities per position (a cache), with the mass outside the top k handled either by
renormalising both sides over the top-k support ("renormalize") or by a tail bucket holding
`1 - sum(top-k)` on both sides ("bucket"; TRL's `_add_tail_bucket`, DistillKit's symmetric tail).

Formulas (FACTS.md; DistiLLM, TRL GKD, REDI):
  forward KL   KL(p_T || q_S)             reverse KL   KL(q_S || p_T)
  JSD(beta)    beta KL(p||M) + (1-beta) KL(q||M),  M = beta p + (1-beta) q
  skew KL      KL(p || a p + (1-a) q)      skew reverse KL  KL(q || a q + (1-a) p)
  TVD          0.5 sum |p - q|
Temperature T divides both sides' logits and the KD term is multiplied by T^2.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike
from jaxtyping import Float, Int, Integer, Real

from bitjax.nn.quant import at_least_f32

TAIL_MODES = ("bucket", "renormalize")
TailMode = Literal[TAIL_MODES]
_TINY = 1e-30
_MASKED = -1e30


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


def summed_negative_logprob(logp_BL: Float[ArrayLike, "B L"], mask_BL: Real[ArrayLike, "B L"]
                            ) -> tuple[Float[ArrayLike, ""], Float[ArrayLike, ""]]:
    """-sum of log p(target) over the masked tokens, and their count."""
    mask = mask_BL.astype(jnp.float32)
    return -jnp.sum(logp_BL * mask), jnp.sum(mask)


# --------------------------------------------------------------------------- sparse teacher, student support

def sparse_distributions(
    student_logits_BLV: Float[ArrayLike, "B L V"],
    teacher_ids_BLK: Integer[ArrayLike, "B L K"],
    teacher_logprobs_BLK: Float[ArrayLike, "B L K"],
    teacher_tail_logprob_BL: Float[ArrayLike, "B L"] | None = None,
    *,
    tail: TailMode = "bucket",
    temperature: float = 1.0,
) -> tuple[Float[ArrayLike, "B L S"], Float[ArrayLike, "B L S"]]:
    """Teacher and student log-probabilities on a common support S (k, or k + 1 with the tail bucket).

    The teacher's top-k log-probabilities (at temperature 1) are divided by `temperature`; with the
    tail bucket the teacher's leftover mass (`teacher_tail_logprob_BL` as cached, else `log(1 - sum)`)
    is one more outcome, tempered alike (an approximation for T != 1: the teacher's tail is known only
    as one number). The student's tail is exact: a log-sum-exp over its non-top-k logits.
    """
    t = jnp.float32(temperature)
    z_BLV = student_logits_BLV.astype(at_least_f32(student_logits_BLV.dtype)) / t
    log_norm_BL1 = jax.nn.logsumexp(z_BLV, axis=-1, keepdims=True)
    s_top_BLK = jnp.take_along_axis(z_BLV, teacher_ids_BLK, axis=-1) - log_norm_BL1
    s_tail_BL1 = None
    if tail == "bucket":
        in_top_BLV = _scatter_mask(teacher_ids_BLK, z_BLV.shape[-1])
        # A large finite fill rather than -inf keeps the gradient finite when the top k cover the vocabulary.
        s_tail_BL1 = jax.nn.logsumexp(jnp.where(in_top_BLV, _MASKED, z_BLV), axis=-1, keepdims=True) - log_norm_BL1
    return _common_support(s_top_BLK, s_tail_BL1, teacher_logprobs_BLK, teacher_tail_logprob_BL, tail, temperature)


def topk_distributions(
    student_top_logp_BLK: Float[ArrayLike, "B L K"],
    vocab_size: int,
    teacher_logprobs_BLK: Float[ArrayLike, "B L K"],
    teacher_tail_logprob_BL: Float[ArrayLike, "B L"] | None = None,
    *,
    tail: TailMode = "bucket",
    temperature: float = 1.0,
) -> tuple[Float[ArrayLike, "B L S"], Float[ArrayLike, "B L S"]]:
    """`sparse_distributions` from the student's tempered log-probabilities on the top-k ids alone.

    The student's tail is `log(1 - sum exp(top-k))`, which equals the log-sum-exp over the non-top-k
    logits when the ids are distinct (cache rows; padding rows repeat id 0, see `student_tail_from_topk`).
    No (B, L, V) array is needed: the chunked head (bitjax.fused_head) calls this per block.
    """
    s_tail_BL1 = student_tail_from_topk(student_top_logp_BLK, vocab_size) if tail == "bucket" else None
    return _common_support(student_top_logp_BLK, s_tail_BL1, teacher_logprobs_BLK, teacher_tail_logprob_BL,
                           tail, temperature)


def student_tail_from_topk(top_logp_BLK: Float[ArrayLike, "B L K"], vocab_size: int) -> Float[ArrayLike, "B L 1"]:
    """log of the student's mass outside the top k, `log(-expm1(logsumexp(top-k)))`, guarded.

    With k >= V the tail is empty: `_MASKED`, the value of the masked reference. Otherwise the mass is
    resolved only to about eps * |log-probs| (it is 1 minus a rounded sum), so it is floored at the dtype's
    eps. The floor is also the guard: rows whose top-k mass rounds to >= 1, or exceeds 1 because padding
    repeats id 0 k times, would take the log of a number <= 0; `maximum` keeps value and gradient finite
    there (a `where` around the log alone would still send NaN back through the untaken branch). Above
    the floor this equals the masked reference to rounding; below it the reference is exact and this is not.
    """
    if top_logp_BLK.shape[-1] >= vocab_size:
        return jnp.full(top_logp_BLK.shape[:-1] + (1,), _MASKED, top_logp_BLK.dtype)
    log_top_BL1 = jax.nn.logsumexp(top_logp_BLK, axis=-1, keepdims=True)
    return jnp.log(jnp.maximum(-jnp.expm1(log_top_BL1), jnp.finfo(top_logp_BLK.dtype).eps))


def _common_support(s_top_BLK, s_tail_BL1, teacher_logprobs_BLK, teacher_tail_logprob_BL, tail, temperature):
    """Teacher and student log-probabilities on the support of `tail` (the student's side already tempered)."""
    t = jnp.float32(temperature)
    t_top_BLK = teacher_logprobs_BLK.astype(jnp.float32)
    if tail == "renormalize":
        t_top_BLK = t_top_BLK / t
        return (jax.nn.log_softmax(t_top_BLK, axis=-1), jax.nn.log_softmax(s_top_BLK, axis=-1))
    if tail != "bucket":
        raise ValueError(f"tail={tail!r}; use 'bucket' or 'renormalize'")
    # Teacher: log(1 - sum p_top), computed in log space; then temper the k + 1 outcomes and renormalise.
    if teacher_tail_logprob_BL is None:
        t_tail_BL1 = _log1mexp(jax.nn.logsumexp(t_top_BLK, axis=-1, keepdims=True))
    else:
        t_tail_BL1 = teacher_tail_logprob_BL.astype(jnp.float32)[..., None]
    t_all_BLS = jax.nn.log_softmax(jnp.concatenate([t_top_BLK, t_tail_BL1], axis=-1) / t, axis=-1)
    s_all_BLS = jnp.concatenate([s_top_BLK, s_tail_BL1], axis=-1)
    return t_all_BLS, s_all_BLS


def _forward_kl(p, q, logp, logq, beta, skew):
    return _kl(p, logp, logq)


def _reverse_kl(p, q, logp, logq, beta, skew):
    return _kl(q, logq, logp)


def _jsd(p, q, logp, logq, beta, skew):
    log_m = jnp.log(jnp.maximum(beta * p + (1.0 - beta) * q, _TINY))
    return beta * _kl(p, logp, log_m) + (1.0 - beta) * _kl(q, logq, log_m)


def _skew_kl(p, q, logp, logq, beta, skew):
    return _kl(p, logp, jnp.log(jnp.maximum(skew * p + (1.0 - skew) * q, _TINY)))


def _skew_reverse_kl(p, q, logp, logq, beta, skew):
    return _kl(q, logq, jnp.log(jnp.maximum(skew * q + (1.0 - skew) * p, _TINY)))


def _jeffreys(p, q, logp, logq, beta, skew):
    return _kl(p, logp, logq) + _kl(q, logq, logp)


def _tvd(p, q, logp, logq, beta, skew):
    return 0.5 * jnp.sum(jnp.abs(p - q), axis=-1)


# The divergences, by the name a recipe gives (distill.kind): the one list the config, the docs and the
# errors derive from. Each maps (p, q, log p, log q, beta, skew) on a common support S to per-token (B, L).
DIVERGENCES = {
    "forward_kl": _forward_kl,
    "reverse_kl": _reverse_kl,
    "jsd": _jsd,
    "skew_kl": _skew_kl,
    "skew_reverse_kl": _skew_reverse_kl,
    "tvd": _tvd,
    "jeffreys": _jeffreys,   # symmetric KL: KL(p||q) + KL(q||p)
}
Divergence = Literal[tuple(DIVERGENCES)]


def divergence(
    teacher_logp_BLS: Float[ArrayLike, "B L S"],
    student_logp_BLS: Float[ArrayLike, "B L S"],
    kind: Divergence = "forward_kl",
    *,
    beta: float = 0.5,
    skew: float = 0.1,
) -> Float[ArrayLike, "B L"]:
    """Per-token divergence between two distributions given as log-probabilities on the same support."""
    if kind not in DIVERGENCES:
        raise ValueError(f"divergence {kind!r}; use one of {', '.join(DIVERGENCES)}")
    p, q = jnp.exp(teacher_logp_BLS), jnp.exp(student_logp_BLS)
    return DIVERGENCES[kind](p, q, teacher_logp_BLS, student_logp_BLS, beta, skew)


def sparse_kd_per_token(
    student_logits_BLV: Float[ArrayLike, "B L V"],
    teacher_ids_BLK: Integer[ArrayLike, "B L K"],
    teacher_logprobs_BLK: Float[ArrayLike, "B L K"],
    teacher_tail_logprob_BL: Float[ArrayLike, "B L"] | None = None,
    *,
    kind: Divergence = "forward_kl",
    tail: TailMode = "bucket",
    temperature: float = 1.0,
    beta: float = 0.5,
    skew: float = 0.1,
) -> Float[ArrayLike, "B L"]:
    """The divergence against a top-k teacher at every position, times T^2 (unmasked)."""
    t_logp, s_logp = sparse_distributions(student_logits_BLV, teacher_ids_BLK, teacher_logprobs_BLK,
                                          teacher_tail_logprob_BL, tail=tail, temperature=temperature)
    return divergence(t_logp, s_logp, kind, beta=beta, skew=skew) * temperature**2


def topk_kd_per_token(
    student_top_logp_BLK: Float[ArrayLike, "B L K"],
    vocab_size: int,
    teacher_logprobs_BLK: Float[ArrayLike, "B L K"],
    teacher_tail_logprob_BL: Float[ArrayLike, "B L"] | None = None,
    *,
    kind: Divergence = "forward_kl",
    tail: TailMode = "bucket",
    temperature: float = 1.0,
    beta: float = 0.5,
    skew: float = 0.1,
) -> Float[ArrayLike, "B L"]:
    """`sparse_kd_per_token` from the student's tempered log-probabilities on the teacher's top-k ids."""
    t_logp, s_logp = topk_distributions(student_top_logp_BLK, vocab_size, teacher_logprobs_BLK,
                                        teacher_tail_logprob_BL, tail=tail, temperature=temperature)
    return divergence(t_logp, s_logp, kind, beta=beta, skew=skew) * temperature**2


def sparse_kd_loss(
    student_logits_BLV: Float[ArrayLike, "B L V"],
    teacher_ids_BLK: Integer[ArrayLike, "B L K"],
    teacher_logprobs_BLK: Float[ArrayLike, "B L K"],
    mask_BL: Real[ArrayLike, "B L"],
    teacher_tail_logprob_BL: Float[ArrayLike, "B L"] | None = None,
    **kwargs,
) -> Float[ArrayLike, ""]:
    """Masked mean over tokens of the divergence against a top-k teacher, times T^2 (keywords as above)."""
    per_token_BL = sparse_kd_per_token(student_logits_BLV, teacher_ids_BLK, teacher_logprobs_BLK,
                                       teacher_tail_logprob_BL, **kwargs)
    return masked_mean(per_token_BL, mask_BL)


def dense_kd_loss(student_logits_BLV, teacher_logits_BLV, mask_BL, *, kind: Divergence = "forward_kl",
                  temperature: float = 1.0, beta: float = 0.5, skew: float = 0.1) -> Float[ArrayLike, ""]:
    """The reference: the same divergence against the full teacher distribution."""
    t = jnp.float32(temperature)
    t_logp = jax.nn.log_softmax(teacher_logits_BLV.astype(jnp.float32) / t, axis=-1)
    s_logp = jax.nn.log_softmax(student_logits_BLV.astype(jnp.float32) / t, axis=-1)
    return masked_mean(divergence(t_logp, s_logp, kind, beta=beta, skew=skew), mask_BL) * temperature**2


def kd_weight(step: jax.Array | int, final_weight: float, warmup_steps: int = 0) -> jax.Array:
    """Weight a of the KD term in `a * KD + (1 - a) * CE`: a linear ramp from 0 to `final_weight`."""
    if warmup_steps <= 0:
        return jnp.asarray(final_weight, jnp.float32)
    return final_weight * jnp.minimum(jnp.asarray(step, jnp.float32) / warmup_steps, 1.0)


# --------------------------------------------------------------------------- traces: SFT and REDI

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


def redi_pair_rows(logp_BL: Float[ArrayLike, "B L"], mask_BL: Real[ArrayLike, "B L"],
                   segment_ids_BL: Int[ArrayLike, "B L"], alpha: float = 0.8
                   ) -> tuple[Float[ArrayLike, " B"], Float[ArrayLike, " B"], Float[ArrayLike, " B"]]:
    """REDI for rows that hold a pair: segment 1 the positive, segment 2 the negative completion.

    Returns REDI per row and the two mean log-probabilities.
    """
    pos = mean_logprob(logp_BL, mask_BL * (segment_ids_BL == 1))
    neg = mean_logprob(logp_BL, mask_BL * (segment_ids_BL == 2))
    return redi(pos, neg, alpha), pos, neg


def completion_mask(prompt_lengths_B: Int[ArrayLike, " B"], lengths_B: Int[ArrayLike, " B"],
                    seq_len: int) -> Int[ArrayLike, "B L"]:
    """1 on the targets that are completion tokens, for inputs laid out `prompt + completion` from position 0.

    Target t predicts token t + 1, so it belongs to the completion when prompt_len - 1 <= t < length - 1.
    """
    t_L = jnp.arange(seq_len)[None, :]
    start_B1, end_B1 = (prompt_lengths_B - 1)[:, None], (lengths_B - 1)[:, None]
    return ((t_L >= start_B1) & (t_L < end_B1)).astype(jnp.int32)


# --------------------------------------------------------------------------- helpers

def _kl(p_BLS, logp_BLS, logq_BLS) -> Float[ArrayLike, "B L"]:
    """sum p (log p - log q), with 0 log 0 = 0 (outcomes the first distribution never takes add nothing).

    The `where` sits inside the product so that neither value nor gradient sees `0 * inf`.
    """
    log_ratio = jnp.where(p_BLS > 0, logp_BLS - logq_BLS, 0.0)
    return jnp.sum(p_BLS * log_ratio, axis=-1)


def _log1mexp(log_x: jax.Array) -> jax.Array:
    """log(1 - exp(log_x)) for log_x <= 0, stable near both ends; -inf when exp(log_x) >= 1."""
    log_x = jnp.minimum(log_x, 0.0)
    return jnp.where(log_x > -0.693, jnp.log(-jnp.expm1(log_x)), jnp.log1p(-jnp.exp(log_x)))


def _scatter_mask(ids_BLK: Integer[ArrayLike, "B L K"], vocab: int) -> jax.Array:
    """(B, L, V) booleans, True at the top-k ids."""
    B, L, _ = ids_BLK.shape
    mask = jnp.zeros((B, L, vocab), dtype=bool)
    b_idx = jnp.arange(B)[:, None, None]
    l_idx = jnp.arange(L)[None, :, None]
    return mask.at[b_idx, l_idx, ids_BLK].set(True)
