"""The BitNet b1.58 decoder transformer and its size presets.

Dimension glossary (suffixes on array names, e.g. `x_BLD`):
  B  batch                L  sequence length (queries)     M  sequence length (keys)
  D  model width          N  query heads                   K  key/value heads
  G  query heads per key/value head (N // K)               H  head width
  F  feed-forward width   V  vocabulary size              S  layers (the stacked blocks' leading axis)

Block (BitNet b1.58 2B4T; every BitLinear input is preceded by an RMSNorm, "SubLN"):
  h   = x + o_proj(attn_sub_norm(attention(q, k, v of input_layernorm(x))))
  out = h + down_proj(ffn_sub_norm(act(gate_proj(u)) * up_proj(u))),  u = post_attention_layernorm(h)
with act = relu(.)**2 ("relu2", 2B4T) or silu ("silu", the LLaMA-style gate). The embedding and the
tied LM head stay full precision. `quant="none"` builds the same network with plain `Linear`
layers: a full-precision teacher or baseline with identical parameter names and shapes.
"""

from __future__ import annotations

import dataclasses
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.typing import ArrayLike
from jaxtyping import Float, Int

from bitjax.attention import BATCH_AXES, AttentionMask, attend, check_impl
from bitjax.errors import ConfigError
from bitjax.int8_matmul import MAX_EXACT_IN_FEATURES
from bitjax.layers import BitLinear, Linear, RMSNorm
from bitjax.quant import at_least_f32

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
    # BitLinear forward as int8 x ternary int8 codes with int32 sums (bitjax.int8_matmul); needs quantization
    # strength 1 throughout (quant_warmup_steps=0). Same parameters and logits up to float rounding of the rescale.
    # A full-precision model (quant="none") has no BitLinear: there it changes nothing.
    int8_matmul: bool = False
    # Attention kernel (bitjax.attention): "auto" picks splash on TPU, cudnn on GPU, xla on CPU. Same parameters.
    attention: Literal["auto", "xla", "chunked", "splash", "cudnn"] = "auto"
    # One block body looped over the layers (compile time independent of depth); False unrolls the loop into
    # the program, which fit-check uses to count a step's bytes (XLA's cost analysis counts a loop body once).
    scan_layers: bool = True
    # Architecture switches for models imported from elsewhere (bitjax.pretrained); BitNet has the defaults.
    sub_norms: bool = True          # SubLN: RMSNorm before o_proj and down_proj (False: LLaMA / Qwen2)
    attention_bias: bool = False    # biases on q/k/v (Qwen2)
    tie_embeddings: bool = True     # the LM head is the embedding (False: a separate lm_head)

    def __post_init__(self):
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
        if self.dtype not in DTYPES:
            raise ConfigError(f"model.dtype={self.dtype!r}; use one of {sorted(DTYPES)}")
        if self.dtype == "float64" and not jax.config.jax_enable_x64:
            raise ConfigError("model.dtype=float64 needs 64-bit JAX; run with JAX_ENABLE_X64=1")
        check_impl(self.attention)
        if self.head_dim % 2:
            raise ConfigError(f"model.head_dim={self.head_dim} must be even for RoPE")

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


def rope(x_BLNH: Float[ArrayLike, "B L N H"], positions_BL: Int[ArrayLike, "B L"],
         theta: float) -> Float[ArrayLike, "B L N H"]:
    """Rotary position embedding, half-split ("NEOX") convention as in Hugging Face LLaMA and llama.cpp bitnet."""
    half = x_BLNH.shape[-1] // 2
    acc = at_least_f32(x_BLNH.dtype)
    inv_freq_H = 1.0 / (theta ** (jnp.arange(half, dtype=acc) / half))
    angles_BLH = positions_BL[..., None].astype(acc) * inv_freq_H[None, None, :]
    sin_BL1H, cos_BL1H = jnp.sin(angles_BLH)[:, :, None, :], jnp.cos(angles_BLH)[:, :, None, :]
    x1, x2 = x_BLNH[..., :half].astype(acc), x_BLNH[..., half:].astype(acc)
    out = jnp.concatenate([x1 * cos_BL1H - x2 * sin_BL1H, x2 * cos_BL1H + x1 * sin_BL1H], axis=-1)
    return out.astype(x_BLNH.dtype)


class KVCache(NamedTuple):
    """Keys and values for decoding: (B, T, K, H) each for one layer, (n_layers, B, T, K, H) for the stack;
    `index` is the slot the next keys go to."""

    k: jax.Array
    v: jax.Array
    index: jax.Array | int


class Attention(nnx.Module):
    """Grouped-query attention with RoPE and a SubLN norm before the output projection."""

    def __init__(self, cfg: ModelConfig, linear_cls, *, rngs: nnx.Rngs):
        self.cfg = cfg
        dense = _dense_factory(cfg, linear_cls, rngs)
        self.q_proj = dense(cfg.d_model, cfg.n_heads * cfg.head_dim, use_bias=cfg.attention_bias)
        self.k_proj = dense(cfg.d_model, cfg.n_kv_heads * cfg.head_dim, use_bias=cfg.attention_bias)
        self.v_proj = dense(cfg.d_model, cfg.n_kv_heads * cfg.head_dim, use_bias=cfg.attention_bias)
        self.attn_sub_norm = _norm(cfg, cfg.n_heads * cfg.head_dim) if cfg.sub_norms else None
        self.o_proj = dense(cfg.n_heads * cfg.head_dim, cfg.d_model)

    def __call__(self, x_BLD, positions_BL, mask: AttentionMask, kv_cache: KVCache | None = None):
        """Attention over the L new positions, or, with a cache, over the cache after writing them into it.

        Returns the output and the updated cache (None without one).
        """
        cfg = self.cfg
        B, L, _ = x_BLD.shape
        K, G, H = cfg.n_kv_heads, cfg.n_heads // cfg.n_kv_heads, cfg.head_dim
        q_BLNH = rope(self.q_proj(x_BLD).reshape(B, L, K * G, H), positions_BL, cfg.rope_theta)
        k_BMKH = rope(self.k_proj(x_BLD).reshape(B, L, K, H), positions_BL, cfg.rope_theta)
        v_BMKH = self.v_proj(x_BLD).reshape(B, L, K, H)
        if kv_cache is not None:   # M becomes the cache length T; the new keys land at slots index..index+L-1
            at = (0, kv_cache.index, 0, 0)
            k_BMKH = jax.lax.dynamic_update_slice(kv_cache.k, k_BMKH.astype(kv_cache.k.dtype), at)
            v_BMKH = jax.lax.dynamic_update_slice(kv_cache.v, v_BMKH.astype(kv_cache.v.dtype), at)
            kv_cache = KVCache(k_BMKH, v_BMKH, kv_cache.index)
        out_BLNH = attend(q_BLNH, k_BMKH, v_BMKH, mask, impl=cfg.attention)
        return self.o_proj(_maybe(self.attn_sub_norm, out_BLNH.reshape(B, L, K * G * H))), kv_cache


class MLP(nnx.Module):
    """Gated feed-forward block, `down(sub_norm(act(gate(u)) * up(u)))`, act relu2 or silu."""

    def __init__(self, cfg: ModelConfig, linear_cls, *, rngs: nnx.Rngs):
        dense = _dense_factory(cfg, linear_cls, rngs)
        self.activation = cfg.ffn_activation
        self.gate_proj = dense(cfg.d_model, cfg.d_ff)
        self.up_proj = dense(cfg.d_model, cfg.d_ff)
        self.ffn_sub_norm = _norm(cfg, cfg.d_ff) if cfg.sub_norms else None
        self.down_proj = dense(cfg.d_ff, cfg.d_model)

    def __call__(self, u_BLD):
        gate_BLF = self.gate_proj(u_BLD)
        act_BLF = jnp.square(jax.nn.relu(gate_BLF)) if self.activation == "relu2" else jax.nn.silu(gate_BLF)
        return self.down_proj(_maybe(self.ffn_sub_norm, act_BLF * self.up_proj(u_BLD)))


class Block(nnx.Module):
    def __init__(self, cfg: ModelConfig, linear_cls, *, rngs: nnx.Rngs):
        self.input_layernorm = _norm(cfg, cfg.d_model)
        self.self_attn = Attention(cfg, linear_cls, rngs=rngs)
        self.post_attention_layernorm = _norm(cfg, cfg.d_model)
        self.mlp = MLP(cfg, linear_cls, rngs=rngs)

    def __call__(self, x_BLD, positions_BL, mask: AttentionMask, kv_cache: KVCache | None = None):
        attn_BLD, kv_cache = self.self_attn(self.input_layernorm(x_BLD), positions_BL, mask, kv_cache)
        h_BLD = x_BLD + attn_BLD
        return h_BLD + self.mlp(self.post_attention_layernorm(h_BLD)), kv_cache


class Transformer(nnx.Module):
    """Decoder-only LM: tokens (B, L) -> logits (B, L, V), float32 (float64 in float64). Tied embedding and head."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        linear_cls = BitLinear if cfg.quant == "ternary" else Linear
        self.embed_tokens = nnx.Embed(
            cfg.vocab_size, cfg.d_model, embedding_init=nnx.initializers.normal(cfg.init_std),
            param_dtype=cfg.param_dtype, rngs=rngs)
        self.layers = stacked_blocks(cfg, linear_cls, rngs)
        self.norm = _norm(cfg, cfg.d_model)
        # A separate head is always full precision, like the embedding it replaces.
        self.lm_head = None if cfg.tie_embeddings else Linear(
            cfg.d_model, cfg.vocab_size, dtype=cfg.compute_dtype, param_dtype=cfg.param_dtype,
            kernel_init=nnx.initializers.normal(cfg.init_std), rngs=rngs)

    def __call__(
        self,
        tokens_BL: Int[ArrayLike, "B L"],
        segment_ids_BL: Int[ArrayLike, "B L"] | None = None,
        positions_BL: Int[ArrayLike, "B L"] | None = None,
    ) -> Float[ArrayLike, "B L V"]:
        return self.unembed(self.hidden_states(tokens_BL, segment_ids_BL, positions_BL))

    def hidden_states(
        self,
        tokens_BL: Int[ArrayLike, "B L"],
        segment_ids_BL: Int[ArrayLike, "B L"] | None = None,
        positions_BL: Int[ArrayLike, "B L"] | None = None,
    ) -> Float[ArrayLike, "B L D"]:
        """The output of the final norm (compute dtype): what the LM head multiplies, see `head_matrix_VD`."""
        B, L = tokens_BL.shape
        if segment_ids_BL is None:
            segment_ids_BL = jnp.ones((B, L), jnp.int32)
        if positions_BL is None:
            positions_BL = jnp.broadcast_to(jnp.arange(L, dtype=jnp.int32), (B, L))
        mask = AttentionMask(segment_ids_BL=segment_ids_BL)
        x_BLD = batch_sharded(self.embed_tokens(tokens_BL).astype(self.cfg.compute_dtype))
        graphdef, layers_state = nnx.split(self.layers)

        def body(x_BLD, layer_state):
            # positions and the mask are closed over: broadcast inputs, the same for every layer.
            x_BLD, _ = nnx.merge(graphdef, layer_state)(x_BLD, positions_BL, mask)
            return batch_sharded(x_BLD), None

        policy = REMAT_POLICIES[self.cfg.remat]
        if policy is not None:
            body = jax.checkpoint(body, policy=policy, prevent_cse=False)   # safe under scan (jax.checkpoint docs)
        x_BLD, _ = jax.lax.scan(body, x_BLD, layers_state, unroll=not self.cfg.scan_layers)
        return self.norm(x_BLD)

    def head(self, x_BLD: Float[ArrayLike, "B L D"]) -> Float[ArrayLike, "B L V"]:
        """Final norm and the LM head (the embedding, unless the model has a separate one)."""
        return self.unembed(self.norm(x_BLD))

    def unembed(self, x_BLD: Float[ArrayLike, "B L D"]) -> Float[ArrayLike, "B L V"]:
        """The LM head alone, on normed hidden states."""
        if self.lm_head is not None:
            return self.lm_head(x_BLD).astype(at_least_f32(x_BLD.dtype))
        embedding_VD = self.embed_tokens.embedding[...].astype(self.cfg.compute_dtype)
        return jnp.einsum("bld,vd->blv", x_BLD, embedding_VD).astype(at_least_f32(x_BLD.dtype))

    def head_matrix_VD(self) -> Float[ArrayLike, "V D"]:
        """The LM head as a (V, D) matrix in the compute dtype: the tied embedding, or the separate head's
        kernel transposed (a layout change the compiler folds into the matmul)."""
        if self.lm_head is not None:
            return self.lm_head.kernel[...].astype(self.cfg.compute_dtype).T
        return self.embed_tokens.embedding[...].astype(self.cfg.compute_dtype)

    def empty_cache(self, batch: int, length: int) -> KVCache:
        """Zeroed key/value caches of `length` slots for every layer, stacked (see bitjax.generate)."""
        cfg = self.cfg
        shape = (cfg.n_layers, batch, length, cfg.n_kv_heads, cfg.head_dim)
        return KVCache(jnp.zeros(shape, cfg.compute_dtype), jnp.zeros(shape, cfg.compute_dtype), 0)

    def decode(self, tokens_BL: Int[ArrayLike, "B L"], positions_BL: Int[ArrayLike, "B L"], mask_B11LT: jax.Array,
               caches: KVCache, index) -> tuple[Float[ArrayLike, "B V"], KVCache]:
        """Run L new tokens through the model, writing their keys and values at cache slot `index` onwards.

        `mask_B11LT` says which cache slots each new token may attend to. Returns the next-token logits
        after the last new token, and the updated caches. The layers are scanned with their caches.
        """
        x_BLD = self.embed_tokens(tokens_BL).astype(self.cfg.compute_dtype)
        mask = AttentionMask(explicit_B11LM=mask_B11LT)
        graphdef, layers_state = nnx.split(self.layers)

        def body(x_BLD, layer):
            layer_state, k_BTKH, v_BTKH = layer
            x_BLD, cache = nnx.merge(graphdef, layer_state)(
                x_BLD, positions_BL, mask, KVCache(k_BTKH, v_BTKH, index))
            return x_BLD, (cache.k, cache.v)

        x_BLD, (k_SBTKH, v_SBTKH) = jax.lax.scan(body, x_BLD, (layers_state, caches.k, caches.v))
        return self.head(x_BLD[:, -1:])[:, 0], KVCache(k_SBTKH, v_SBTKH, index)


def stacked_blocks(cfg: ModelConfig, linear_cls, rngs: nnx.Rngs) -> Block:
    """One Block whose variables carry a leading (n_layers,) axis: what `jax.lax.scan` walks.

    Each layer is initialised as its own Block, drawing from `rngs` in layer order, then the layers' variables
    are stacked; so every layer's random init is independent and the numbers match per-layer construction.
    """
    blocks = [Block(cfg, linear_cls, rngs=rngs) for _ in range(cfg.n_layers)]
    graphdef, first = nnx.split(blocks[0])
    states = [first] + [nnx.split(block)[1] for block in blocks[1:]]
    return nnx.merge(graphdef, jax.tree.map(lambda *xs: jnp.stack(xs), *states))


def batch_sharded(x_B: jax.Array) -> jax.Array:
    """Keep activations split over the batch mesh axes, when the trace has a mesh (the trainer sets it).

    Under FSDP the weights are split over the model width; left alone, the compiler may split the activations
    that way too and have every device compute the whole global batch (seen in the compiled 125m step).
    """
    mesh = jax.sharding.get_abstract_mesh()
    axes = tuple(a for a in BATCH_AXES if not mesh.empty and a in mesh.axis_names)
    if not axes or x_B.shape[0] % int(np.prod([mesh.shape[a] for a in axes])):
        return x_B
    spec = jax.sharding.PartitionSpec(axes, *([None] * (x_B.ndim - 1)))
    return jax.lax.with_sharding_constraint(x_B, jax.sharding.NamedSharding(mesh, spec))


def _norm(cfg: ModelConfig, features: int) -> RMSNorm:
    return RMSNorm(features, eps=cfg.norm_eps, dtype=cfg.compute_dtype, param_dtype=cfg.param_dtype)


def _maybe(norm: RMSNorm | None, x):
    return x if norm is None else norm(x)


def _dense_factory(cfg: ModelConfig, linear_cls, rngs: nnx.Rngs):
    def dense(d_in: int, d_out: int, use_bias: bool = False):
        kwargs = dict(dtype=cfg.compute_dtype, param_dtype=cfg.param_dtype,
                      kernel_init=nnx.initializers.normal(cfg.init_std), use_bias=use_bias, rngs=rngs)
        if linear_cls is BitLinear:
            kwargs["quantize_activations"] = cfg.quantize_activations
            kwargs["int8_matmul"] = cfg.int8_matmul
        return linear_cls(d_in, d_out, **kwargs)
    return dense


def count_params(cfg: ModelConfig) -> dict[str, int]:
    """Parameter counts from shapes alone (`nnx.eval_shape`): nothing is allocated."""
    abstract = nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0)))
    params = nnx.state(abstract, nnx.Param)
    total = sum(x.size for x in jax.tree.leaves(params))
    embedding = cfg.vocab_size * cfg.d_model * (1 if cfg.tie_embeddings else 2)   # and the untied head
    return {"total": total, "embedding": embedding, "non_embedding": total - embedding}
