"""Loss terms. Every term takes float32 logits (B, L, V) and a per-token mask (B, L) and returns a scalar
mean over the masked tokens."""

from __future__ import annotations

import jax.numpy as jnp
import optax
from jaxtyping import Array, Float, Int


def masked_mean(values_BL: Float[Array, "B L"], mask_BL: Int[Array, "B L"]) -> Float[Array, ""]:
    mask = mask_BL.astype(jnp.float32)
    return jnp.sum(values_BL * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def cross_entropy(logits_BLV: Float[Array, "B L V"], targets_BL: Int[Array, "B L"],
                  mask_BL: Int[Array, "B L"]) -> Float[Array, ""]:
    """Next-token cross-entropy (nats per token) over the tokens where mask is 1."""
    per_token_BL = optax.softmax_cross_entropy_with_integer_labels(logits_BLV, targets_BL)
    return masked_mean(per_token_BL, mask_BL)
