"""ModelConfig: the shape and numerics of a decoder, validated at construction, and its size presets.

`bitjax.model` builds the network from it (and re-exports it: `from bitjax.model import ModelConfig`).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax
import jax.numpy as jnp

from bitjax.errors import ConfigError
from bitjax.nn.attention import check_impl
from bitjax.nn.int8_matmul import MAX_EXACT_IN_FEATURES
from bitjax.nn.rope import RopeScaling

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16, "float64": jnp.float64}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Shape and numerics of a decoder. Presets: `tiny`, `bitnet_125m`, `bitnet_700m`, `bitnet_2b4t`."""

    vocab_size: int = 4096
    d_model: int = 256
    n_layers: int = 4
    n_heads: int = 4
    n_kv_heads: int = 2
    head_dim: int = 64
    d_ff: int = 768
    ffn_activation: Literal["relu2", "silu"] = "silu"
    max_seq_len: int = 2048
    rope_theta: float = 10_000.0
    norm_eps: float = 1e-5
    quant: Literal["ternary", "none"] = "ternary"
    quantize_activations: bool = True
    dtype: str = "float32"  # compute dtype; parameters are float32 (float64 with "float64", a numerics check)
    init_std: float = 0.02
    # What the backward pass recomputes of each block (jax.checkpoint around the scanned body; see REMAT_POLICIES):
    # "none" keeps every activation, "full" recomputes the block (~1/3 more FLOPs, least memory), "dots_saveable"
    # keeps the weight matmuls' outputs and recomputes the rest. True / False (older configs) read as full / none.
    remat: Literal["none", "full", "dots_saveable"] | bool = "none"
    # BitLinear forward as int8 x ternary int8 codes with int32 sums (bitjax.nn.int8_matmul); needs quantization
    # strength 1 throughout (quant_warmup_steps=0). Same parameters and logits up to float rounding of the rescale.
    # A full-precision model (quant="none") has no BitLinear: there it changes nothing.
    int8_matmul: bool = False
    # Attention kernel (bitjax.nn.attention): "auto" picks splash on TPU, cudnn on GPU, xla on CPU. Same parameters.
    attention: Literal["auto", "xla", "chunked", "splash", "cudnn"] = "auto"
    # One block body looped over the layers (compile time independent of depth); False unrolls the loop into
    # the program, which fit-check uses to count a step's bytes (XLA's cost analysis counts a loop body once).
    scan_layers: bool = True
    # Architecture switches for models imported from elsewhere (bitjax.pretrained); BitNet has the defaults.
    sub_norms: bool = True          # SubLN: RMSNorm before o_proj and down_proj (False: LLaMA / Qwen2)
    attention_bias: bool = False    # biases on q/k/v (Qwen2)
    tie_embeddings: bool = True     # the LM head is the embedding (False: a separate lm_head)
    qk_norm: bool = False           # RMSNorm over each query and key head before RoPE (Qwen3)
    # RoPE's frequency scaling (Llama 3.x's llama3, linear, YaRN; bitjax.nn.rope); none by default
    rope_scaling: RopeScaling = RopeScaling()
    # Blocks kept in full precision in a ternary model (dynamic 1.58-bit quantization keeps the first and last):
    # their linears are built as BitLinear at quantization strength 0 (weights and activations unquantized) and
    # export as plain weights. Indices 0..n_layers-1.
    full_precision_layers: tuple[int, ...] = ()

    def __post_init__(self):
        if isinstance(self.rope_scaling, dict):   # a run's config.json read back as keyword arguments
            fields = {k: tuple(v) if isinstance(v, list) else v for k, v in self.rope_scaling.items()}   # JSON arrays
            object.__setattr__(self, "rope_scaling", RopeScaling(**fields))
        if isinstance(self.remat, bool):
            object.__setattr__(self, "remat", "full" if self.remat else "none")
        if self.remat not in REMAT_POLICIES:
            raise ConfigError(f"model.remat={self.remat!r}; use one of {', '.join(map(repr, REMAT_POLICIES))}")
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "head_dim", "d_ff", "max_seq_len"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"model.{name}={getattr(self, name)} must be positive")
        for name in ("rope_theta", "norm_eps", "init_std"):
            if not 0 < getattr(self, name) < float("inf"):   # NaN fails too
                raise ConfigError(f"model.{name}={getattr(self, name)} must be a positive finite number")
        if self.n_heads % self.n_kv_heads:
            raise ConfigError(
                f"model.n_heads={self.n_heads} is not a multiple of model.n_kv_heads={self.n_kv_heads}; "
                "choose n_kv_heads dividing n_heads")
        if self.ffn_activation not in ("relu2", "silu"):
            raise ConfigError(f"model.ffn_activation={self.ffn_activation!r}; use 'relu2' or 'silu'")
        if self.quant not in ("ternary", "none"):
            raise ConfigError(f"model.quant={self.quant!r}; use 'ternary' or 'none'")
        widest = max(self.d_model, self.n_heads * self.head_dim, self.d_ff)
        if self.int8_matmul and widest > MAX_EXACT_IN_FEATURES:
            raise ConfigError(f"model.int8_matmul=True with a BitLinear input width {widest} > "
                              f"{MAX_EXACT_IN_FEATURES} (int32 sums no longer exact in float32); "
                              "set model.int8_matmul=false")
        object.__setattr__(self, "full_precision_layers", tuple(int(i) for i in self.full_precision_layers))
        layers = self.full_precision_layers
        if any(not 0 <= i < self.n_layers for i in layers) or len(set(layers)) != len(layers):
            raise ConfigError(f"model.full_precision_layers={layers}: give distinct block indices in 0.."
                              f"{self.n_layers - 1}, e.g. model.full_precision_layers=0,{self.n_layers - 1}")
        if layers and self.int8_matmul:
            raise ConfigError(f"model.full_precision_layers={layers} with model.int8_matmul=True: the int8 matmul "
                              "holds every block at full quantization; set model.int8_matmul=false")
        if self.dtype not in DTYPES:
            raise ConfigError(f"model.dtype={self.dtype!r}; use one of {sorted(DTYPES)}")
        if self.dtype == "float64" and not jax.config.jax_enable_x64:
            raise ConfigError("model.dtype=float64 needs 64-bit JAX; run with JAX_ENABLE_X64=1")
        check_impl(self.attention)
        if self.head_dim % 2:
            raise ConfigError(f"model.head_dim={self.head_dim} must be even for RoPE")
        self.rope_scaling.check_head_dim(self.head_dim)

    @classmethod
    def tiny(cls, **kw) -> "ModelConfig":
        """A few-million-parameter model for tests and CPU recipes. Widths are multiples of 256 (GGUF TQ types)."""
        return cls(**kw)

    @classmethod
    def bitnet_125m(cls, **kw) -> "ModelConfig":
        """GPT-2-small-sized student sharing SmolLM2's 49152-token vocabulary."""
        return cls(**{**dict(vocab_size=49152, d_model=768, n_layers=12, n_heads=12, n_kv_heads=4,
                             head_dim=64, d_ff=2048, ffn_activation="relu2", max_seq_len=2048), **kw})

    @classmethod
    def bitnet_700m(cls, **kw) -> "ModelConfig":
        """The 700M shape of the BitNet b1.58 paper (1536 wide, 24 layers, 16 heads, FFN 4096)."""
        return cls(**{**dict(vocab_size=49152, d_model=1536, n_layers=24, n_heads=16, n_kv_heads=4,
                             head_dim=96, d_ff=4096, ffn_activation="relu2", max_seq_len=2048), **kw})

    @classmethod
    def bitnet_2b4t(cls, **kw) -> "ModelConfig":
        """BitNet b1.58 2B4T exactly: 2560 wide, 30 layers, 20/5 heads of 128, FFN 6912, relu2, LLaMA-3 vocab."""
        return cls(**{**dict(vocab_size=128256, d_model=2560, n_layers=30, n_heads=20, n_kv_heads=5,
                             head_dim=128, d_ff=6912, ffn_activation="relu2", max_seq_len=4096,
                             rope_theta=500_000.0), **kw})

    @property
    def compute_dtype(self):
        return DTYPES[self.dtype]

    @property
    def param_dtype(self):
        """Latent parameters: float32, as AdamW needs; float64 only for float64 numerics checks."""
        return jnp.float64 if self.dtype == "float64" else jnp.float32


# Fields that say how a step computes, not what the model is: checkpoints ignore them (a run may resume with
# any changed) and an online teacher takes the student's.
COMPUTE_FIELDS = ("remat", "int8_matmul", "attention", "scan_layers")

# jax.checkpoint policy per `ModelConfig.remat` (None: no checkpoint at all).
REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}

PRESETS = {
    "tiny": ModelConfig.tiny,
    "bitnet_125m": ModelConfig.bitnet_125m,
    "bitnet_700m": ModelConfig.bitnet_700m,
    "bitnet_2b4t": ModelConfig.bitnet_2b4t,
}
