"""Flax NNX building blocks of a BitNet b1.58 model: `BitLinear`, its full-precision twin, `RMSNorm`.

`BitLinear` keeps full-precision latent weights (what the optimizer updates) and runs its forward
pass on ternary weights and int8 activations, with straight-through gradients (see `bitjax.nn.quant`).

Usage::

    from flax import nnx
    from bitjax.nn.layers import BitLinear, RMSNorm

    rngs = nnx.Rngs(0)
    norm = RMSNorm(512, rngs=rngs)              # BitNet b1.58 puts an RMSNorm before every BitLinear
    proj = BitLinear(512, 1024, rngs=rngs)      # kernel (512, 1024), float32 latent weights
    y_BLF = proj(norm(x_BLD))                   # ternary weights x int8 activations, gradients via STE

    proj.quant_strength[...] = 0.5            # gradual quantization: halfway between fp and ternary

`Linear` has the same parameters and call signature without quantization, so the same model code
builds a ternary student or a full-precision teacher/baseline by choosing the class.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from jax.typing import ArrayLike, DTypeLike
from jaxtyping import Float

from bitjax.nn import quant, ternary_gather
from bitjax.nn.int8_matmul import int8_bitlinear


class QuantStrength(nnx.Variable):
    """Gradual-quantization strength lambda in [0, 1]; not a parameter, set by the trainer each step."""


class TernaryKernel(nnx.Variable):
    """An int8 BitLinear's `quant.ternary_codes(kernel)`, set by `ternarize_once` for one forward pass; the codes
    packed four to a byte (bitjax.nn.ternary_gather) when the layer has a gather plan."""


def default_kernel_init(stddev: float = 0.02):
    return nnx.initializers.normal(stddev=stddev)


class Linear(nnx.Module):
    """A dense layer `y = x @ kernel (+ bias)`, kernel of shape (in_features, out_features).

    Args:
      in_features: width of the input's last axis.
      out_features: width of the output's last axis.
      dtype: compute dtype (e.g. jnp.bfloat16 on TPU/GPU); the kernel is cast to it in the forward pass.
      param_dtype: storage dtype of the latent kernel (float32 by default, as the optimizer needs).
      kernel_init: initializer of the kernel.
      use_bias: add a learned bias (zeros at init); BitNet has none, imported Qwen2 q/k/v projections do.
      rngs: nnx.Rngs for initialization.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        dtype: DTypeLike = jnp.float32,
        param_dtype: DTypeLike = jnp.float32,
        kernel_init=None,
        use_bias: bool = False,
        rngs: nnx.Rngs,
    ):
        init = kernel_init or default_kernel_init()
        self.in_features, self.out_features = in_features, out_features
        self.dtype = dtype
        self.kernel = nnx.Param(init(rngs.params(), (in_features, out_features), param_dtype))
        self.bias = nnx.Param(jnp.zeros((out_features,), param_dtype)) if use_bias else None

    def __call__(self, x_BLD: Float[ArrayLike, "... D"]) -> Float[ArrayLike, "... F"]:
        return self._add_bias(jnp.dot(x_BLD.astype(self.dtype), self.kernel[...].astype(self.dtype)))

    def _add_bias(self, y):
        """The bias stays full precision in both layers (it is not a matmul weight)."""
        if self.bias is None:
            return y
        return y + self.bias[...].astype(self.dtype).reshape((1,) * (y.ndim - 1) + (-1,))


class BitLinear(Linear):
    """BitNet b1.58 linear layer: ternary absmean weights, int8 absmax per-token activations.

    The forward pass computes `quantize_activations(x) @ ternarize(kernel)` with straight-through
    estimators, so gradients reach the full-precision latent `kernel` unchanged. The layer does not
    normalise its input: as in BitNet b1.58 2B4T, the model puts an RMSNorm (SubLN) before it.

    Args (beyond `Linear`'s):
      quantize_activations: run activations through the int8 absmax quantizer (True in BitNet b1.58);
        False gives a weight-only ternary layer (W1.58A16).
      quant_strength: initial gradual-quantization lambda; 1.0 is fully quantized. Training from
        scratch keeps 1.0; fine-tuning a full-precision model ramps it from 0 (see `quant.lambda_schedule`).
      int8_matmul: with activations quantized, run the forward as int8 codes x ternary codes with int32
        sums (`bitjax.nn.int8_matmul`) instead of a float matmul of fake-quantized values. It fixes the
        strength at 1: `quant_strength` is then not read, so use it only when lambda stays 1.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        quantize_activations: bool = True,
        quant_strength: float = 1.0,
        int8_matmul: bool = False,
        dtype: DTypeLike = jnp.float32,
        param_dtype: DTypeLike = jnp.float32,
        kernel_init=None,
        use_bias: bool = False,
        rngs: nnx.Rngs,
    ):
        super().__init__(
            in_features, out_features, dtype=dtype, param_dtype=param_dtype,
            kernel_init=kernel_init, use_bias=use_bias, rngs=rngs,
        )
        self.quantize_activations = quantize_activations
        self.quant_strength = QuantStrength(jnp.asarray(quant_strength, jnp.float32))
        self.int8_matmul = int8_matmul
        self.ternary = nnx.data(None)   # a TernaryKernel while `ternarize_once` has prepared the layer
        self.code_gather = nnx.static(None)   # a ternary_gather.GatherPlan: the codes come packed, split by FSDP

    def __call__(self, x_BLD: Float[ArrayLike, "... D"]) -> Float[ArrayLike, "... F"]:
        if self.int8_matmul and self.quantize_activations:
            ternary = None if self.ternary is None else self.ternary.get_value()
            if ternary is not None and self.code_gather is not None:   # packed slices: gather, unpack here
                ternary = (ternary_gather.gather(ternary[0], self.code_gather), ternary[1])
            return self._add_bias(int8_bitlinear(x_BLD.astype(self.dtype), self.kernel[...], ternary))
        lam = self.quant_strength[...]
        kernel = self.kernel[...]
        w = quant.ste(kernel, quant.ternarize(kernel), lam).astype(self.dtype)
        x = x_BLD.astype(self.dtype)
        if self.quantize_activations:
            x = quant.ste(x, quant.quantize_activations(x), lam)
        return self._add_bias(jnp.dot(x, w))


def ternarize_once(model: nnx.Module, gather_plan=None) -> None:
    """Ternarize every int8 BitLinear kernel of `model` now, all together, for the forward passes that follow.

    Call it on a freshly merged model inside the loss. Each layer then reads its codes and scale instead of
    computing them: under FSDP the per-tensor absmeans are reduced side by side at the top of the step (the
    compiler can combine them) rather than one all-reduce per layer call, and remat does not recompute them
    in the backward pass. The codes stay valid only while the kernels do: prepare a fresh model each step.

    `gather_plan(path, kernel_shape)`: a `ternary_gather.GatherPlan` for a kernel the fsdp devices split
    (path like `layers.mlp.gate_proj.kernel`, shape as stored), or None. Such codes are packed four to a byte
    where they lie, and each layer gathers and unpacks its own when it runs (bitjax.nn.ternary_gather).
    """
    for path, module in nnx.iter_graph(model):
        if isinstance(module, BitLinear) and module.int8_matmul and module.quantize_activations:
            kernel = module.kernel[...]
            # a stacked kernel (layers, in, out) holds one tensor per layer: one scale each
            codes, scale = jax.vmap(quant.ternary_codes)(kernel) if kernel.ndim == 3 else quant.ternary_codes(kernel)
            name = ".".join(str(p) for p in path) + ".kernel"
            plan = gather_plan(name, kernel.shape) if gather_plan is not None else None
            if plan is not None:
                codes = ternary_gather.pack_for_gather(codes, plan)
            module.code_gather = nnx.static(plan)
            module.ternary = nnx.data(TernaryKernel((codes, scale)))


class RMSNorm(nnx.Module):
    """Root-mean-square layer norm with a learned scale, computed in float32 (float64 for float64 input).

    Args:
      features: width of the normalised (last) axis.
      eps: added to the mean square (1e-5 in BitNet b1.58 2B4T).
      dtype: output dtype.
      param_dtype: storage dtype of the scale.
    """

    def __init__(self, features: int, *, eps: float = 1e-5, dtype: DTypeLike = jnp.float32,
                 param_dtype: DTypeLike = jnp.float32, rngs: nnx.Rngs | None = None):
        del rngs  # the scale is initialised to ones; accepted for a uniform constructor signature
        self.eps, self.dtype = eps, dtype
        self.scale = nnx.Param(jnp.ones((features,), param_dtype))

    def __call__(self, x: Float[ArrayLike, "... D"]) -> Float[ArrayLike, "... D"]:
        x32 = x.astype(quant.at_least_f32(x.dtype))
        inv_rms = jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.eps)
        scale = self.scale[...].reshape((1,) * (x.ndim - 1) + (-1,))
        return (x32 * inv_rms * scale).astype(self.dtype)
