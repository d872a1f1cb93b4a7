"""Divergences between a teacher's and a student's distributions on one support: the DIVERGENCES table.

Formulas (FACTS.md; DistiLLM, TRL GKD):
  forward KL   KL(p_T || q_S)             reverse KL   KL(q_S || p_T)
  JSD(beta)    beta KL(p||M) + (1-beta) KL(q||M),  M = beta p + (1-beta) q
  skew KL      KL(p || a p + (1-a) q)      skew reverse KL  KL(q || a q + (1-a) p)
  TVD          0.5 sum |p - q|             Jeffreys     KL(p||q) + KL(q||p)

Dimension letters: U the outcomes of the common support (the teacher's E top-k entries, plus one tail
bucket when the tail is kept; bitjax.losses.terms).
"""

from __future__ import annotations

from typing import Literal

import jax.numpy as jnp
from jax.typing import ArrayLike
from jaxtyping import Float

_TINY = 1e-30


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
# errors derive from. Each maps (p, q, log p, log q, beta, skew) on a common support U to per-token (B, L).

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
    teacher_logp_BLU: Float[ArrayLike, "B L U"],
    student_logp_BLU: Float[ArrayLike, "B L U"],
    kind: Divergence = "forward_kl",
    *,
    beta: float = 0.5,
    skew: float = 0.1,
) -> Float[ArrayLike, "B L"]:
    """Per-token divergence between two distributions given as log-probabilities on the same support."""
    if kind not in DIVERGENCES:
        raise ValueError(f"divergence {kind!r}; use one of {', '.join(DIVERGENCES)}")
    p, q = jnp.exp(teacher_logp_BLU), jnp.exp(student_logp_BLU)
    return DIVERGENCES[kind](p, q, teacher_logp_BLU, student_logp_BLU, beta, skew)

def _kl(p_BLU, logp_BLU, logq_BLU) -> Float[ArrayLike, "B L"]:
    """sum p (log p - log q), with 0 log 0 = 0 (outcomes the first distribution never takes add nothing).

    The `where` sits inside the product so that neither value nor gradient sees `0 * inf`.
    """
    log_ratio = jnp.where(p_BLU > 0, logp_BLU - logq_BLU, 0.0)
    return jnp.sum(p_BLU * log_ratio, axis=-1)
