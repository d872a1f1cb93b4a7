"""Causal attention over packed documents, by one of several kernels chosen with `ModelConfig.attention`.

Semantics shared by every kernel: query l sees key m when m <= l and both carry the same segment id. Segment
id 0 marks padding; padding positions are one more "document", so a padding query always sees at least
itself and its softmax stays finite. Query heads are grouped (GQA): head n = k * G + g reads key/value head k.

Kernels (`impl`):
  xla      masked softmax over a materialised (B, K, G, L, M) score tensor; the reference
  chunked  blockwise online softmax (flash-attention arithmetic in plain JAX): scores exist per key block only
  splash   TPU Pallas splash attention, run per device under `shard_map` over the batch (and head) mesh axes
  cudnn    cuDNN flash attention through `jax.nn.dot_product_attention` (NVIDIA GPUs)
  auto     splash on TPU, cudnn on GPU, xla on CPU, judged by the devices the step is compiled for (xla where the
           chosen kernel cannot take the shape or dtype: splash needs L % 128 == 0, cudnn 16-bit floats)

The mesh comes from the surrounding trace (`jax.sharding.use_abstract_mesh`, set by the trainer); without
one, the kernels run on unsplit arrays.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from bitjax.errors import ConfigError
from bitjax.nn.quant import at_least_f32

IMPLS = ("auto", "xla", "chunked", "splash", "cudnn")
BATCH_AXES = ("data", "fsdp")   # as bitjax.sharding.BATCH; named here so the model needs no sharding import
HEAD_AXIS = "tensor"
CHUNK = 512                     # keys per block of the chunked kernel
SPLASH_TILES = (512, 256, 128)  # query and key tiles of the splash kernel: the largest that divides the length


class AttentionMask(NamedTuple):
    """Which keys each query sees: packed-document segments (causal), or an explicit mask for KV-cache decoding.

    Built once per forward pass and passed unchanged to every block.
    """

    segment_ids_BL: jax.Array | None = None
    explicit_B11LM: jax.Array | None = None   # decode: which cache slots each new token sees (xla only)


def check_impl(impl: str) -> None:
    if impl not in IMPLS:
        raise ConfigError(f"model.attention={impl!r}; use one of {', '.join(IMPLS)}")


def platform() -> str:
    """The platform the current trace compiles for: the mesh's devices if a mesh is set, else the default backend."""
    device = getattr(jax.sharding.get_abstract_mesh(), "abstract_device", None)
    return device.platform if device is not None else jax.default_backend()


def resolve(impl: str, length: int = 128, dtype=jnp.bfloat16) -> str:
    """`impl` with "auto" replaced by the kernel for `platform()`, where that kernel takes `length` and `dtype`
    (splash: lengths divisible by 128; cudnn: 16-bit floats), else by the xla reference."""
    check_impl(impl)
    if impl != "auto":
        return impl
    kind = platform()
    if kind == "tpu" and length % 128 == 0:
        return "splash"
    if kind in ("gpu", "cuda") and jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16):
        return "cudnn"
    return "xla"


def auto_fallback(impl: str, kind: str, length: int, dtype) -> str | None:
    """Why "auto" takes the xla reference (an L x L score tensor per head) on a platform with a fused kernel,
    or None: said once at start-up, since nothing else would tell (bitjax.training.trainer)."""
    if impl != "auto":
        return None
    if kind == "tpu" and length % 128:
        return (f"model.attention=auto uses plain XLA attention (L x L scores) on TPU: data.seq_len={length} is not "
                "a multiple of 128, which the splash kernel needs; choose such a length for flash attention")
    if kind in ("gpu", "cuda") and jnp.dtype(dtype) not in (jnp.bfloat16, jnp.float16):
        return (f"model.attention=auto uses plain XLA attention (L x L scores) on GPU: model.dtype={jnp.dtype(dtype)}"
                " is not a 16-bit float, which cuDNN flash attention needs; set model.dtype=bfloat16 for it")
    return None


def segment_mask(segment_ids_BL: jax.Array) -> jax.Array:
    """Causal mask that also stops attention across packed documents: (B, 1, 1, L, M) booleans."""
    length = segment_ids_BL.shape[1]
    causal_LM = jnp.tril(jnp.ones((length, length), dtype=bool))
    same_segment_BLM = segment_ids_BL[:, :, None] == segment_ids_BL[:, None, :]
    return (causal_LM[None] & same_segment_BLM)[:, None, None, :, :]


def attend(q_BLNH: jax.Array, k_BMKH: jax.Array, v_BMKH: jax.Array, mask: AttentionMask, *, impl: str = "auto",
           interpret: bool = False) -> jax.Array:
    """Attention output (B, L, N, H) in the dtype of `v`. `interpret` runs the splash kernel in the Pallas
    interpreter (tests on a CPU)."""
    if mask.explicit_B11LM is not None:
        return masked_softmax(q_BLNH, k_BMKH, v_BMKH, mask.explicit_B11LM)
    segment_ids_BL = mask.segment_ids_BL
    impl = resolve(impl, q_BLNH.shape[1], q_BLNH.dtype)
    if impl == "xla":
        return masked_softmax(q_BLNH, k_BMKH, v_BMKH, segment_mask(segment_ids_BL))
    if impl == "chunked":
        return chunked(q_BLNH, k_BMKH, v_BMKH, segment_ids_BL)
    if impl == "splash":
        return splash(q_BLNH, k_BMKH, v_BMKH, segment_ids_BL, interpret=interpret)
    return cudnn(q_BLNH, k_BMKH, v_BMKH, segment_ids_BL)


def masked_softmax(q_BLNH, k_BMKH, v_BMKH, mask_B11LM) -> jax.Array:
    """The reference: scores in at least float32, masked with the dtype's lowest value, one softmax."""
    B, L, N, H = q_BLNH.shape
    K = k_BMKH.shape[2]
    q_BLKGH = q_BLNH.reshape(B, L, K, N // K, H)
    acc = at_least_f32(q_BLKGH.dtype)
    logits_BKGLM = jnp.einsum("blkgh,bmkh->bkglm", q_BLKGH, k_BMKH).astype(acc) * H**-0.5
    logits_BKGLM = jnp.where(mask_B11LM, logits_BKGLM, jnp.finfo(acc).min)
    probs_BKGLM = jax.nn.softmax(logits_BKGLM, axis=-1).astype(v_BMKH.dtype)
    return jnp.einsum("bkglm,bmkh->blkgh", probs_BKGLM, v_BMKH).reshape(B, L, N, H)


def chunked(q_BLNH, k_BMKH, v_BMKH, segment_ids_BL, chunk: int = CHUNK) -> jax.Array:
    """Online softmax over key blocks of `chunk` (a `lax.scan`): the live score tensor is (B, K, G, L, chunk).

    Suffixes: J key blocks, C keys per block.

    Keys are padded up to a multiple of `chunk` with segment id -1, which no query carries.
    """
    B, L, N, H = q_BLNH.shape
    M, K = k_BMKH.shape[1], k_BMKH.shape[2]
    G, C = N // K, min(chunk, M)
    n_blocks = -(-M // C)
    pad = n_blocks * C - M
    acc = at_least_f32(q_BLNH.dtype)
    q_BLKGH = q_BLNH.reshape(B, L, K, G, H)
    k_JBCKH = jnp.pad(k_BMKH, ((0, 0), (0, pad), (0, 0), (0, 0))).reshape(B, n_blocks, C, K, H).swapaxes(0, 1)
    v_JBCKH = jnp.pad(v_BMKH, ((0, 0), (0, pad), (0, 0), (0, 0))).reshape(B, n_blocks, C, K, H).swapaxes(0, 1)
    kv_seg_JBC = jnp.pad(segment_ids_BL, ((0, 0), (0, pad)), constant_values=-1).reshape(B, n_blocks, C).swapaxes(0, 1)
    q_pos_L = jnp.arange(L)

    def step(carry, block):
        max_BKGL, sum_BKGL, out_BKGLH = carry
        j, k_BCKH, v_BCKH, kv_seg_BC = block
        logits_BKGLC = jnp.einsum("blkgh,bckh->bkglc", q_BLKGH, k_BCKH).astype(acc) * H**-0.5
        visible_BLC = ((j * C + jnp.arange(C))[None, None, :] <= q_pos_L[None, :, None]) & (
            segment_ids_BL[:, :, None] == kv_seg_BC[:, None, :])
        logits_BKGLC = jnp.where(visible_BLC[:, None, None], logits_BKGLC, -jnp.inf)
        # The output does not depend on the running max, only its rounding does: no gradient through it.
        new_max_BKGL = jax.lax.stop_gradient(jnp.maximum(max_BKGL, logits_BKGLC.max(-1)))
        # A block a query sees nothing of leaves its running max at -inf: subtract 0 instead to keep exp finite.
        safe_max_BKGL = jnp.where(jnp.isfinite(new_max_BKGL), new_max_BKGL, 0.0)
        p_BKGLC = jnp.exp(logits_BKGLC - safe_max_BKGL[..., None])
        rescale_BKGL = jnp.exp(max_BKGL - safe_max_BKGL)
        sum_BKGL = sum_BKGL * rescale_BKGL + p_BKGLC.sum(-1)
        pv_BKGLH = jnp.einsum("bkglc,bckh->bkglh", p_BKGLC.astype(v_BCKH.dtype), v_BCKH).astype(acc)
        out_BKGLH = out_BKGLH * rescale_BKGL[..., None] + pv_BKGLH
        return (new_max_BKGL, sum_BKGL, out_BKGLH), None

    init = (jnp.full((B, K, G, L), -jnp.inf, acc), jnp.zeros((B, K, G, L), acc), jnp.zeros((B, K, G, L, H), acc))
    # Checkpointed: the backward pass recomputes each block's scores instead of saving all of them (L x L).
    blocks = (jnp.arange(n_blocks), k_JBCKH, v_JBCKH, kv_seg_JBC)
    (_, sum_BKGL, out_BKGLH), _ = jax.lax.scan(jax.checkpoint(step), init, blocks)
    out_BKGLH = out_BKGLH / sum_BKGL[..., None]   # every query sees itself: the sum is at least exp(0) = 1
    return out_BKGLH.transpose(0, 3, 1, 2, 4).reshape(B, L, N, H).astype(v_BMKH.dtype)


def cudnn(q_BLNH, k_BMKH, v_BMKH, segment_ids_BL) -> jax.Array:
    """cuDNN flash attention: causal, with the same-segment mask passed as a (B, 1, L, M) boolean."""
    if platform() not in ("gpu", "cuda"):
        raise ConfigError(f"model.attention='cudnn' needs an NVIDIA GPU, not {platform()!r}; "
                          "use model.attention=auto (or xla)")
    if jnp.dtype(q_BLNH.dtype) not in (jnp.bfloat16, jnp.float16):
        raise ConfigError(f"model.attention='cudnn' needs model.dtype bfloat16 or float16, not {q_BLNH.dtype}; "
                          "set model.dtype=bfloat16 or model.attention=auto")
    same_segment_B1LM = (segment_ids_BL[:, :, None] == segment_ids_BL[:, None, :])[:, None]
    return jax.nn.dot_product_attention(q_BLNH, k_BMKH, v_BMKH, mask=same_segment_B1LM, is_causal=True,
                                        implementation="cudnn")


def splash(q_BLNH, k_BMKH, v_BMKH, segment_ids_BL, *, interpret: bool = False) -> jax.Array:
    """Pallas splash attention, one kernel call per device on its own rows (and heads, when "tensor" divides them)."""
    B, L, N, H = q_BLNH.shape
    K = k_BMKH.shape[2]
    if L % 128:
        raise ConfigError(f"model.attention='splash' needs a sequence length divisible by 128, not {L}; "
                          "choose data.seq_len a multiple of 128 or model.attention=xla")
    mesh = jax.sharding.get_abstract_mesh()
    kernel = functools.partial(_splash_rows, interpret=interpret)
    if mesh.empty:
        return kernel(q_BLNH, k_BMKH, v_BMKH, segment_ids_BL)
    batch = tuple(a for a in BATCH_AXES if a in mesh.axis_names)
    if B % int(np.prod([mesh.shape[a] for a in batch])):
        batch = ()
    heads = HEAD_AXIS if HEAD_AXIS in mesh.axis_names and K % mesh.shape[HEAD_AXIS] == 0 else None
    qkv_spec = P(batch or None, None, heads, None)
    return jax.shard_map(kernel, mesh=mesh, in_specs=(qkv_spec, qkv_spec, qkv_spec, P(batch or None, None)),
                         out_specs=qkv_spec, check_vma=False)(q_BLNH, k_BMKH, v_BMKH, segment_ids_BL)


def _splash_rows(q_BLNH, k_BMKH, v_BMKH, segment_ids_BL, *, interpret: bool) -> jax.Array:
    """The splash kernel on one device's rows: vmapped over B, heads first as the kernel wants them."""
    from jax.experimental.pallas.ops.tpu import splash_attention as sa

    _, L, N, H = q_BLNH.shape
    M = k_BMKH.shape[1]
    bq, bkv = _tile(L), _tile(M)
    blocks = sa.BlockSizes(block_q=bq, block_kv=bkv, block_kv_compute=bkv, block_q_dkv=bq, block_kv_dkv=bkv,
                           block_kv_dkv_compute=bkv, block_q_dq=bq, block_kv_dq=bkv)
    mask = sa.MultiHeadMask([sa.CausalMask((L, M)) for _ in range(N)])
    kernel = sa.make_splash_mha(mask, block_sizes=blocks, head_shards=1, q_seq_shards=1, interpret=interpret)
    # The kernel does not scale the scores; scaling q first is the usual flash-attention arrangement.
    q_BNLH = (q_BLNH * jnp.asarray(H**-0.5, q_BLNH.dtype)).transpose(0, 2, 1, 3)
    k_BKMH, v_BKMH = k_BMKH.transpose(0, 2, 1, 3), v_BMKH.transpose(0, 2, 1, 3)
    segment_ids_BL = segment_ids_BL.astype(jnp.int32)
    segment_ids = sa.SegmentIds(q=segment_ids_BL, kv=segment_ids_BL)
    out_BNLH = jax.vmap(kernel)(q_BNLH, k_BKMH, v_BKMH, segment_ids)
    return out_BNLH.transpose(0, 2, 1, 3).astype(v_BMKH.dtype)


def _tile(length: int) -> int:
    return next(t for t in SPLASH_TILES if length % t == 0)
