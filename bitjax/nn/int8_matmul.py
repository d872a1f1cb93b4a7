"""BitLinear's fully quantized matmul on integer codes: int8 activations x ternary int8 weights, int32 sums.

At quantization strength 1 the BitLinear forward `quantize_activations(x) @ ternarize(W)` is
`(codes_x @ codes_W) * scale_x * scale_W` (per-token activation scale, per-tensor weight scale, both the
`1 / s` of `bitjax.nn.quant`). The integer product is exact, and so is its conversion to float32:
|acc| <= 128 * in_features, below 2^24 for in_features <= 131072. The presets' widest BitLinear input is
d_ff (2048 / 4096 / 6912 for bitnet_125m / 700m / 2b4t): |acc| <= 884,736 < 2^24 = 16,777,216. The only
rounding left is the two rescale multiplications.

The backward is the straight-through gradient of the fake-quantized path (`quant.ste` at strength 1):
the gradient of the plain matmul `x_q @ W_q`, passed unchanged to x and to the latent kernel,

    dX = dY @ W_q^T = (dY @ codes_W^T) * scale_W
    dW = x_q^T @ dY = codes_X^T @ (dY * scale_X)      (scale_X is per token, so it scales dY's rows)

computed in the compute dtype (float32 accumulation) from the saved int8 codes and scales: the
residuals are one byte per activation instead of a float copy of x_q. dW comes out in the compute dtype, so
under FSDP the gradient's reduce-scatter moves bf16 in a bf16 step, like a plain layer's.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike
from jaxtyping import Float

from bitjax.nn import quant

MAX_EXACT_IN_FEATURES = 2**24 // 128


def int8_bitlinear(x: Float[ArrayLike, "... D"], kernel: Float[ArrayLike, "D F"],
                   ternary: tuple[jax.Array, jax.Array] | None = None) -> Float[ArrayLike, "... F"]:
    """`quantize_activations(x) @ ternarize(kernel)` on int8 codes, in x's dtype; straight-through gradients.

    `ternary`: `quant.ternary_codes(kernel)` when computed ahead of the call (`layers.ternarize_once`);
    the kernel then only receives the gradient.
    """
    codes_w, scale_w = quant.ternary_codes(kernel) if ternary is None else ternary
    return _int8_bitlinear(x, kernel, codes_w, scale_w, jnp.dtype(kernel.dtype))


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _int8_bitlinear(x, kernel, codes_w, scale_w, kernel_dtype):
    return _forward(x, kernel, codes_w, scale_w, kernel_dtype)[0]


def _forward(x, kernel, codes_w, scale_w, kernel_dtype):
    del kernel, kernel_dtype   # the codes and scale stand for the kernel; it is an argument for its gradient
    codes_x, scale_x = quant.activation_codes(x)
    acc = lax.dot_general(codes_x, codes_w, (((x.ndim - 1,), (0,)), ((), ())), preferred_element_type=jnp.int32)
    y = rescale(acc, scale_x, scale_w)
    return y.astype(x.dtype), (codes_x, scale_x, codes_w, scale_w)


def rescale(acc: jax.Array, scale_x: jax.Array, scale_w: jax.Array) -> jax.Array:
    """The int32 sums back to real units, `(acc * scale_x) * scale_w`, in the scales' float dtype."""
    dtype = jnp.promote_types(scale_x.dtype, scale_w.dtype)
    return (acc.astype(dtype) * scale_x.astype(dtype)) * scale_w.astype(dtype)


def _backward(kernel_dtype, residuals, dy):
    codes_x, scale_x, codes_w, scale_w = residuals
    dtype = dy.dtype
    acc = quant.at_least_f32(dtype)
    lead = tuple(range(dy.ndim - 1))
    # int8 codes are exact in bfloat16 and wider: integers up to 2^8 need at most 8 significant bits.
    dx = lax.dot_general(dy, codes_w.astype(dtype), (((dy.ndim - 1,), (1,)), ((), ())),
                         preferred_element_type=acc) * scale_w.astype(acc)
    dy_scaled = (dy.astype(acc) * scale_x.astype(acc)).astype(dtype)
    # dW leaves the matmul in the compute dtype (float32 sums inside it), as a plain bf16 layer's does: under FSDP
    # its partial sums are reduce-scattered in that dtype, and become the latent kernel's dtype only after.
    dw = lax.dot_general(codes_x.astype(dtype), dy_scaled, ((lead, lead), ((), ())), preferred_element_type=dtype)
    # Straight through: nothing flows to the codes (integers) or the scale (the STE stops it there too).
    return dx.astype(dtype), dw.astype(kernel_dtype), None, jnp.zeros_like(scale_w)


_int8_bitlinear.defvjp(_forward, _backward)
