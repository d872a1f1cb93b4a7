"""The BitNet b1.58 decoder transformer and its size presets.

Dimension letters are bitjax's glossary (bitjax/__init__.py): B batch, L queries, M keys, T cache slots,
D width, N query heads, K key/value heads, G = N // K, H head width, F FFN width, V vocabulary, Z layers.

Block (BitNet b1.58 2B4T; every BitLinear input is preceded by an RMSNorm, "SubLN"):
  h   = x + o_proj(attn_sub_norm(attention(q, k, v of input_layernorm(x))))
  out = h + down_proj(ffn_sub_norm(act(gate_proj(u)) * up_proj(u))),  u = post_attention_layernorm(h)
with act = relu(.)**2 ("relu2", 2B4T) or silu ("silu", the LLaMA-style gate). The embedding and the
tied LM head stay full precision. `quant="none"` builds the same network with plain `Linear`
layers: a full-precision teacher or baseline with identical parameter names and shapes.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.typing import ArrayLike
from jaxtyping import Float, Int

from bitjax.nn import layer_stack
from bitjax.nn.attention import BATCH_AXES, AttentionMask, attend
from bitjax.nn.layers import BitLinear, Linear, RMSNorm
from bitjax.nn.model_config import COMPUTE_FIELDS, DTYPES, PRESETS, REMAT_POLICIES, ModelConfig  # noqa: F401
from bitjax.nn.quant import at_least_f32
from bitjax.nn.rope import rope


class AttentionInputs(NamedTuple):
    """One block's queries (B, L, N, H) and keys and values (B, L, K, H), as attention reads them (after RoPE)."""

    q_BLNH: jax.Array
    k_BLKH: jax.Array
    v_BLKH: jax.Array


class KVCache(NamedTuple):
    """Keys and values for decoding: (B, T, K, H) each for one layer, (n_layers, B, T, K, H) for the stack;
    `index` is the slot the next keys go to."""

    k: jax.Array
    v: jax.Array
    index: jax.Array | int


class Attention(nnx.Module):
    """Grouped-query attention with RoPE, optional per-head q/k norms (Qwen3) and a SubLN norm before the output
    projection."""

    def __init__(self, cfg: ModelConfig, linear_cls, *, rngs: nnx.Rngs):
        self.cfg = cfg
        dense = _dense_factory(cfg, linear_cls, rngs)
        self.q_proj = dense(cfg.d_model, cfg.n_heads * cfg.head_dim, use_bias=cfg.attention_bias)
        self.k_proj = dense(cfg.d_model, cfg.n_kv_heads * cfg.head_dim, use_bias=cfg.attention_bias)
        self.v_proj = dense(cfg.d_model, cfg.n_kv_heads * cfg.head_dim, use_bias=cfg.attention_bias)
        self.q_norm = _norm(cfg, cfg.head_dim) if cfg.qk_norm else None
        self.k_norm = _norm(cfg, cfg.head_dim) if cfg.qk_norm else None
        self.attn_sub_norm = _norm(cfg, cfg.n_heads * cfg.head_dim) if cfg.sub_norms else None
        self.o_proj = dense(cfg.n_heads * cfg.head_dim, cfg.d_model)

    def __call__(self, x_BLD, positions_BL, mask: AttentionMask, kv_cache: KVCache | None = None):
        """Attention over the L new positions, or, with a cache, over the cache after writing them into it.

        Returns the output and the updated cache (None without one).
        """
        B, L, _ = x_BLD.shape
        q_BLNH, k_BMKH, v_BMKH = self.inputs(x_BLD, positions_BL)
        if kv_cache is not None:   # M becomes the cache length T; the new keys land at slots index..index+L-1
            at = (0, kv_cache.index, 0, 0)
            k_BMKH = jax.lax.dynamic_update_slice(kv_cache.k, k_BMKH.astype(kv_cache.k.dtype), at)
            v_BMKH = jax.lax.dynamic_update_slice(kv_cache.v, v_BMKH.astype(kv_cache.v.dtype), at)
            kv_cache = KVCache(k_BMKH, v_BMKH, kv_cache.index)
        out_BLNH = attend(q_BLNH, k_BMKH, v_BMKH, mask, impl=self.cfg.attention)
        return self.o_proj(_maybe(self.attn_sub_norm, out_BLNH.reshape(B, L, -1))), kv_cache

    def inputs(self, x_BLD, positions_BL) -> AttentionInputs:
        """The queries, keys and values of the L positions (q/k norms, then RoPE, applied to queries and keys)."""
        cfg = self.cfg
        B, L, _ = x_BLD.shape
        K, H = cfg.n_kv_heads, cfg.head_dim
        q_BLNH = _maybe(self.q_norm, self.q_proj(x_BLD).reshape(B, L, cfg.n_heads, H))
        k_BLKH = _maybe(self.k_norm, self.k_proj(x_BLD).reshape(B, L, K, H))
        return AttentionInputs(rope(q_BLNH, positions_BL, cfg.rope_theta, cfg.rope_scaling),
                               rope(k_BLKH, positions_BL, cfg.rope_theta, cfg.rope_scaling),
                               self.v_proj(x_BLD).reshape(B, L, K, H))


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
    def __init__(self, cfg: ModelConfig, linear_cls, *, rngs: nnx.Rngs, full_precision: bool = False):
        self.input_layernorm = _norm(cfg, cfg.d_model)
        self.self_attn = Attention(cfg, linear_cls, rngs=rngs)
        self.post_attention_layernorm = _norm(cfg, cfg.d_model)
        self.mlp = MLP(cfg, linear_cls, rngs=rngs)
        if full_precision:   # a block of model.full_precision_layers: its BitLinears at strength 0
            for _, module in nnx.iter_graph(self):
                if isinstance(module, BitLinear):
                    module.quant_strength[...] = jnp.zeros_like(module.quant_strength[...])

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
        return self.hidden_states_and_inputs(tokens_BL, segment_ids_BL, positions_BL)[0]

    def hidden_states_and_inputs(
        self,
        tokens_BL: Int[ArrayLike, "B L"],
        segment_ids_BL: Int[ArrayLike, "B L"] | None = None,
        positions_BL: Int[ArrayLike, "B L"] | None = None,
        layer: int | None = None,
    ) -> tuple[Float[ArrayLike, "B L D"], AttentionInputs | None]:
        """`hidden_states`, and with `layer` (negative: from the end) that block's attention inputs.

        The scan carries the block's input out of the loop (a select per layer, no per-layer outputs); the
        block's input norm and q/k/v projections then run once more on it, outside the scan.
        """
        B, L = tokens_BL.shape
        if segment_ids_BL is None:
            segment_ids_BL = jnp.ones((B, L), jnp.int32)
        if positions_BL is None:
            positions_BL = jnp.broadcast_to(jnp.arange(L, dtype=jnp.int32), (B, L))
        mask = AttentionMask(segment_ids_BL=segment_ids_BL)
        x_BLD = batch_sharded(self.embed_tokens(tokens_BL).astype(self.cfg.compute_dtype))
        graphdef, layers_state = nnx.split(self.layers)
        index = None if layer is None else range(self.cfg.n_layers)[layer]

        def body(carry, xs):
            # positions and the mask are closed over: broadcast inputs, the same for every layer.
            (x_BLD, kept_BLD), (i, layer_state) = carry, xs
            if index is not None:
                kept_BLD = jnp.where(i == index, x_BLD, kept_BLD)
            x_BLD, _ = nnx.merge(graphdef, layer_state)(x_BLD, positions_BL, mask)
            return (batch_sharded(x_BLD), kept_BLD), None

        policy = REMAT_POLICIES[self.cfg.remat]
        if policy is not None:
            body = jax.checkpoint(body, policy=policy, prevent_cse=False)   # safe under scan (jax.checkpoint docs)
        layer_ids = None if index is None else jnp.arange(self.cfg.n_layers)
        kept_BLD = None if index is None else jnp.zeros_like(x_BLD)
        (x_BLD, kept_BLD), _ = jax.lax.scan(body, (x_BLD, kept_BLD), (layer_ids, layers_state),
                                            unroll=not self.cfg.scan_layers)
        if index is None:
            return self.norm(x_BLD), None
        block = nnx.merge(graphdef, jax.tree.map(lambda a: a[index], layers_state))
        return self.norm(x_BLD), block.self_attn.inputs(block.input_layernorm(kept_BLD), positions_BL)

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
        """Zeroed key/value caches of `length` slots for every layer, stacked (see bitjax.nn.decode)."""
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

        x_BLD, (k_ZBTKH, v_ZBTKH) = jax.lax.scan(body, x_BLD, (layers_state, caches.k, caches.v))
        return self.head(x_BLD[:, -1:])[:, 0], KVCache(k_ZBTKH, v_ZBTKH, index)


def stacked_blocks(cfg: ModelConfig, linear_cls, rngs: nnx.Rngs) -> Block:
    """One Block whose variables carry a leading (n_layers,) axis: what `jax.lax.scan` walks.

    Each layer is initialised as its own Block, drawing from `rngs` in layer order, then the layers' variables
    are stacked; so every layer's random init is independent and the numbers match per-layer construction.
    """
    blocks = [Block(cfg, linear_cls, rngs=rngs, full_precision=i in cfg.full_precision_layers)
              for i in range(cfg.n_layers)]
    graphdef, first = nnx.split(blocks[0])
    states = [first] + [nnx.split(block)[1] for block in blocks[1:]]
    return nnx.merge(graphdef, jax.tree.map(lambda *xs: jnp.stack(xs), *states))


def quant_strengths(cfg: ModelConfig, quant_vars, lam: ArrayLike = 1.0):
    """Values for a model's QuantStrength variables (abstract or not): the gradual-quantization `lam` in every
    block, 0 in `cfg.full_precision_layers`. Everything that merges a model with a strength goes through here."""
    keep_Z = np.asarray([0.0 if i in cfg.full_precision_layers else 1.0 for i in range(cfg.n_layers)], np.float32)

    def one(key_path, v):
        if layer_stack.is_stacked(layer_stack.path_name(key_path)):   # (n_layers,): one strength per block
            return jnp.asarray(lam, v.dtype) * jnp.asarray(keep_Z, v.dtype)
        return jnp.full(v.shape, lam, v.dtype)

    return jax.tree_util.tree_map_with_path(one, quant_vars)


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
