"""BitDistill's attention-relation loss (MiniLMv2): the student's Q-Q, K-K and V-V relations against the teacher's.

For one block (`distill.relation_layer`, by default the last of each model) and each of its queries, keys and
values A (B, L, W) as attention reads them (all heads side by side, RoPE applied to queries and keys):

  split the width W into R relation heads of d = W / R          (`distill.relation_heads`; W may differ
  rel_A[b, r, l, :] = softmax_m(A_blr . A_bmr / sqrt(d))         between teacher and student, R may not)
  over the keys m the query l attends to (m <= l, same segment: attention's causal, packed-document mask)

  relation loss per position = sum over A in (Q, K, V) of mean over r of KL(rel_A^teacher || rel_A^student)

The objective averages it over a "kd" source's trained tokens, like the KD term, and adds
`distill.relation_weight` times it to that source's loss (bitjax.losses.objectives). It needs the teacher's q/k/v of
the same batch, so only an online teacher (`distill.online`) provides it. Memory: one (B, R, L, L) float32
relation matrix per kind and per model, for one block.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike
from jaxtyping import Float, Int

from bitjax.errors import ConfigError
from bitjax.nn.attention import segment_mask
from bitjax.nn.model_config import ModelConfig
from bitjax.nn.quant import at_least_f32
from bitjax.nn.transformer import AttentionInputs

_MASKED = -1e30   # a masked key's score: finite, so 0 * (logp_t - logp_s) stays 0 and gradients stay finite


def relation_logprobs(a_BLW: Float[ArrayLike, "B L W"], segment_ids_BL: Int[ArrayLike, "B L"],
                      heads: int) -> Float[ArrayLike, "B R L M"]:
    """log rel_A: the log-softmax over visible keys of the scaled dot products of `a` with itself, per head."""
    B, L, W = a_BLW.shape
    d = W // heads
    a_BLRd = a_BLW.astype(at_least_f32(a_BLW.dtype)).reshape(B, L, heads, d)
    scores_BRLM = jnp.einsum("blrd,bmrd->brlm", a_BLRd, a_BLRd) * d**-0.5
    scores_BRLM = jnp.where(segment_mask(segment_ids_BL)[:, 0], scores_BRLM, _MASKED)
    return jax.nn.log_softmax(scores_BRLM, axis=-1)


def relation_kl_per_token(student: AttentionInputs, teacher: AttentionInputs, segment_ids_BL: Int[ArrayLike, "B L"],
                          heads: int) -> Float[ArrayLike, "B L"]:
    """Per position: sum over Q, K, V of the head-mean KL(teacher relation || student relation) of its row.

    The teacher's side gets no gradient."""
    kl_BL = 0.0
    for s, t in zip(student, teacher):
        B, L = s.shape[:2]
        logp_s_BRLM = relation_logprobs(s.reshape(B, L, -1), segment_ids_BL, heads)
        logp_t_BRLM = jax.lax.stop_gradient(relation_logprobs(t.reshape(B, L, -1), segment_ids_BL, heads))
        kl_BRL = jnp.sum(jnp.exp(logp_t_BRLM) * (logp_t_BRLM - logp_s_BRLM), axis=-1)
        kl_BL = kl_BL + jnp.mean(kl_BRL, axis=1)
    return kl_BL


def check_model(cfg: ModelConfig, layer: int, heads: int, who: str) -> None:
    """One-line ConfigErrors for a relation layer outside the model or widths the relation heads do not divide."""
    if not -cfg.n_layers <= layer < cfg.n_layers:
        raise ConfigError(f"distill.relation_layer={layer} is outside the {who}'s {cfg.n_layers} layers; use 0.."
                          f"{cfg.n_layers - 1}, or -1 for the last")
    for name, width in (("query", cfg.n_heads * cfg.head_dim), ("key/value", cfg.n_kv_heads * cfg.head_dim)):
        if width % heads:
            raise ConfigError(f"distill.relation_heads={heads} does not divide the {who}'s {name} width {width}; "
                              "choose a divisor of both its query and key/value widths")
