"""BitNet b1.58 quantizers: the one source of truth for training, export and tests.

All functions are pure and jit-able. Formulas (arXiv 2402.17764, and the Hugging Face
"Fine-tuning LLMs to 1.58bit" reference code):

  weights, one scale per tensor:  s = 1 / max(mean(|W|), eps);  W_q = clip(round(W * s), -1, 1) / s
  activations, int8 per token:    s = 127 / max(max(|x|, -1), eps);  x_q = clip(round(x * s), -128, 127) / s
  straight-through estimator:     x + stop_gradient(q(x) - x)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike
from jaxtyping import Float, Int

WEIGHT_EPS = 1e-5
ACTIVATION_EPS = 1e-5
ACTIVATION_BITS = 8


def at_least_f32(dtype) -> jnp.dtype:
    """The dtype quantizers, norms and losses compute in: float32, or float64 for float64 inputs."""
    return jnp.promote_types(dtype, jnp.float32)


def weight_quant_scale(w: Float[ArrayLike, "..."]) -> Float[ArrayLike, ""]:
    """The quantizer's per-tensor `s = 1 / max(mean(|W|), eps)` (float32, or float64 for float64 weights)."""
    return 1.0 / jnp.maximum(jnp.mean(jnp.abs(w.astype(at_least_f32(w.dtype)))), WEIGHT_EPS)


def ternary_codes(w: Float[ArrayLike, "..."]) -> tuple[Int[ArrayLike, "..."], Float[ArrayLike, ""]]:
    """Ternarize a tensor into int8 codes in {-1, 0, 1} and the dequantization scale `1 / s`.

    `codes * scale` is the ternarized tensor; `scale` is the absmean, which is what a
    runtime multiplies by (Hugging Face `autobitlinear` offline `weight_scale`, GGUF block `d`).
    """
    s = weight_quant_scale(w)
    codes = jnp.clip(jnp.round(w.astype(s.dtype) * s), -1, 1).astype(jnp.int8)
    return codes, 1.0 / s


def ternarize(w: Float[ArrayLike, "..."]) -> Float[ArrayLike, "..."]:
    """Absmean ternarization, dequantized: every entry is -1/s, 0 or +1/s."""
    s = weight_quant_scale(w)
    return (jnp.clip(jnp.round(w.astype(s.dtype) * s), -1, 1) / s).astype(w.dtype)


def activation_scale(x: Float[ArrayLike, "... D"]) -> Float[ArrayLike, "... 1"]:
    """Per-token int8 scale `127 / max(|x|)`, one per row of the last axis."""
    qmax = 2 ** (ACTIVATION_BITS - 1) - 1
    absmax = jnp.max(jnp.abs(x.astype(at_least_f32(x.dtype))), axis=-1, keepdims=True)
    return qmax / jnp.maximum(absmax, ACTIVATION_EPS)


def activation_codes(x: Float[ArrayLike, "... D"]) -> tuple[Int[ArrayLike, "... D"], Float[ArrayLike, "... 1"]]:
    """Per-token int8 codes in [-128, 127] and the dequantization scale `1 / s`, one per row.

    `codes * scale` is `quantize_activations(x)` up to the rounding of `1 / s` (the codes are the same).
    """
    qmin, qmax = -(2 ** (ACTIVATION_BITS - 1)), 2 ** (ACTIVATION_BITS - 1) - 1
    s = activation_scale(x)
    codes = jnp.clip(jnp.round(x.astype(s.dtype) * s), qmin, qmax).astype(jnp.int8)
    return codes, 1.0 / s


def quantize_activations(x: Float[ArrayLike, "... D"]) -> Float[ArrayLike, "... D"]:
    """Per-token absmax int8 fake quantization: values lie on the grid k / s, k in [-128, 127]."""
    qmin, qmax = -(2 ** (ACTIVATION_BITS - 1)), 2 ** (ACTIVATION_BITS - 1) - 1
    scale = activation_scale(x)
    x_q = jnp.clip(jnp.round(x.astype(scale.dtype) * scale), qmin, qmax) / scale
    return x_q.astype(x.dtype)


def ste(x: jax.Array, x_quantized: jax.Array, lam: float | jax.Array = 1.0) -> jax.Array:
    """Straight-through estimator with gradual strength `lam` in [0, 1].

    Forward: `x + lam * (q(x) - x)`; backward: identity in `x`. With lam = 1 this is
    `x + stop_gradient(q(x) - x)`, the forward value is exactly q(x).
    """
    delta = jax.lax.stop_gradient(x_quantized - x)
    return x + jnp.asarray(lam, x.dtype) * delta


def lambda_schedule(step: int | jax.Array, warmup_steps: int) -> jax.Array:
    """Gradual quantization strength `min(step / warmup_steps, 1)`; 1 from the start if warmup is 0.

    The HF blog found warmup_steps = 1000 best for fine-tuning a full-precision model
    into ternary; training from scratch uses 0.
    """
    if warmup_steps <= 0:
        return jnp.asarray(1.0, jnp.float32)
    return jnp.minimum(jnp.asarray(step, jnp.float32) / warmup_steps, 1.0)
