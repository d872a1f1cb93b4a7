"""What each tensor of a ternary student is called and holds in a GGUF, for each runtime architecture.

Names come from gguf's constants (`blk.N.attn_q.weight`, `blk.N.attn_q_norm.weight`, `output.weight`, ...).
Two things depend on the architecture (bitjax.export.architectures):

  the ternary scale   bitnet: the codes in {-1, 0, 1}, and the exact float32 absmean scale in a `.scale` tensor
                      beside them, which llama.cpp's bitnet graph multiplies the matmul by. llama, qwen2, qwen3:
                      the codes times the scale in the weight itself, so a stock llama.cpp graph needs nothing
                      else (the llama.cpp in llama-cpp-python 0.3.36 ignores `.scale` in qwen2's FFN). A TQ2_0 /
                      TQ1_0 block stores that as its fp16 block scale `d` (1 / 2048 relative rounding, once per
                      tensor), F16 as fp16 values, F32 exactly; the codes stay exact.
  the q/k rows        llama: llama.cpp rotates interleaved pairs, so the q and k rows (and their biases) are stored
                      permuted as llama.cpp's convert_hf_to_gguf.py permutes them; bitnet, qwen2, qwen3 rotate
                      half-split pairs like bitjax and keep bitjax's order.
"""

from __future__ import annotations

import gguf
import numpy as np

from bitjax.export.architectures import Architecture
from bitjax.export.model_source import TernaryTensor
from bitjax.nn.model_config import ModelConfig

# bitjax module path suffix -> llama.cpp tensor kind, in file order
BLOCK_TENSORS = {
    "input_layernorm": gguf.MODEL_TENSOR.ATTN_NORM,
    "self_attn.q_proj": gguf.MODEL_TENSOR.ATTN_Q,
    "self_attn.k_proj": gguf.MODEL_TENSOR.ATTN_K,
    "self_attn.v_proj": gguf.MODEL_TENSOR.ATTN_V,
    "self_attn.q_norm": gguf.MODEL_TENSOR.ATTN_Q_NORM,
    "self_attn.k_norm": gguf.MODEL_TENSOR.ATTN_K_NORM,
    "self_attn.attn_sub_norm": gguf.MODEL_TENSOR.ATTN_SUB_NORM,
    "self_attn.o_proj": gguf.MODEL_TENSOR.ATTN_OUT,
    "post_attention_layernorm": gguf.MODEL_TENSOR.FFN_NORM,
    "mlp.gate_proj": gguf.MODEL_TENSOR.FFN_GATE,
    "mlp.up_proj": gguf.MODEL_TENSOR.FFN_UP,
    "mlp.ffn_sub_norm": gguf.MODEL_TENSOR.FFN_SUB_NORM,
    "mlp.down_proj": gguf.MODEL_TENSOR.FFN_DOWN,
}
TOP_TENSORS = {"embed_tokens": gguf.MODEL_TENSOR.TOKEN_EMBD, "norm": gguf.MODEL_TENSOR.OUTPUT_NORM,
               "lm_head": gguf.MODEL_TENSOR.OUTPUT}
ROPE_FREQS = gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight"


def gguf_name(module_path: str) -> str:
    """`layers.3.mlp.up_proj` -> `blk.3.ffn_up`; `embed_tokens` -> `token_embd`; `lm_head` -> `output`."""
    if module_path in TOP_TENSORS:
        return gguf.TENSOR_NAMES[TOP_TENSORS[module_path]]
    _, layer, suffix = module_path.split(".", 2)
    return gguf.TENSOR_NAMES[BLOCK_TENSORS[suffix]].format(bid=int(layer))


def stored_rows(arch: Architecture, cfg: ModelConfig, module_path: str, rows_O: np.ndarray) -> np.ndarray:
    """A weight (O, I) or bias (O,) in the file's row order: q/k rows permuted for an interleaved-RoPE graph."""
    if not arch.interleaved_rope or not module_path.endswith(("self_attn.q_proj", "self_attn.k_proj")):
        return rows_O
    heads = cfg.n_heads if module_path.endswith("q_proj") else cfg.n_kv_heads
    return (rows_O.reshape(heads, 2, rows_O.shape[0] // heads // 2, *rows_O.shape[1:]).swapaxes(1, 2)
            .reshape(rows_O.shape))


def stored_scale(arch: Architecture, gguf_type: str, scale: np.float32) -> np.float32:
    """The scale the runtime multiplies by: exact in a bitnet `.scale` tensor or an F32 weight, else fp16."""
    if arch.scale_tensors or gguf_type == "f32":
        return np.float32(scale)
    return np.float32(np.float16(scale))


def ternary_values(arch: Architecture, gguf_type: str, tensor: TernaryTensor) -> np.ndarray:
    """(O, I) float32 values the weight tensor is quantized from: the codes, or the codes times the scale."""
    codes = tensor.codes_OI.astype(np.float32)
    return codes if arch.scale_tensors else codes * stored_scale(arch, gguf_type, tensor.scale)
