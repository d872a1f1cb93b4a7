"""Zero-padded widths for GGUF TQ2_0/TQ1_0, whose rows come in blocks of 256: the same network, stored wider.

A model whose widths are not multiples of 256 (SmolLM2-135M: D = 576, F = 1536, 9 query and 3 key/value heads
of 64) is written with every width multiplied by one ratio r (576 -> 768, 1536 -> 2048, r = 4/3):

  token_embd (V, D) -> (V, rD)              zero columns: the padded coordinates of the residual stream start
                                            at 0, and every linear below has zero rows there, so they stay 0
  gate, up (F, D) -> (rF, rD); down         zero rows and columns: act(0) * 0 = 0 for silu and relu2
  attn_q (NH, D) -> (rNH, rD)               the rN - N added query heads are zero, and they form whole new
  attn_k, attn_v (KH, D) -> (K'H, rD)       key/value groups (K' = K + (rN - N) / G, G = N / K) whose keys and
                                            values are zero too: their attention output is exactly 0. (A zero
                                            query head appended to an existing group would output the mean of
                                            that group's values, which attn_sub_norm would then see.)
  attn_output (D, NH) -> (rD, rNH)          zero rows and columns
  q/k/v biases (qwen2)                      zero-padded like their weights' rows: the new heads stay zero
  an untied output head (V, D) -> (V, rD)   zero columns, which meet the residual stream's zero coordinates
  every RMSNorm scale                       zero-padded and multiplied by sqrt(1/r); the norm epsilon is
                                            divided by r (GGUF has one epsilon for all norms, so every normed
                                            width - D, NH, F - takes the same ratio)

An RMSNorm over a zero-padded vector then computes exactly the unpadded one:
rsqrt(sum(x^2) / (rW) + eps / r) * scale / sqrt(r) = rsqrt(sum(x^2) / W + eps) * scale. Zeros leave the
per-token absmax of the int8 activations unchanged, and the ternary codes are padded with 0 while each
tensor keeps its own scale (the absmean of the unpadded tensor), so nothing of the trained model changes.
The cost is size and decode work: the block linears hold r^2 times as many (mostly zero) codes.
"""

from __future__ import annotations

import dataclasses
from fractions import Fraction

import numpy as np

from bitjax.export.checks import TQ_BLOCK
from bitjax.export.model_source import TernaryModel, TernaryTensor
from bitjax.nn.model_config import ModelConfig

MAX_RATIO = 2   # beyond twice the width (four times the codes) a padded file is not worth writing


@dataclasses.dataclass(frozen=True)
class PaddedShape:
    ratio: Fraction
    d_model: int
    d_ff: int
    n_heads: int
    n_kv_heads: int

    def describe(self, cfg: ModelConfig) -> str:
        return (f"d_model {cfg.d_model} -> {self.d_model}, d_ff {cfg.d_ff} -> {self.d_ff}, heads "
                f"{cfg.n_heads}/{cfg.n_kv_heads} -> {self.n_heads}/{self.n_kv_heads}")


def padded_shape(cfg: ModelConfig) -> PaddedShape | None:
    """The smallest common ratio that makes D, F and the query width multiples of 256 with whole new key/value
    groups, or None if there is none up to `MAX_RATIO` (this padding needs the query width to be D)."""
    group = cfg.n_heads // cfg.n_kv_heads
    first = -(-cfg.d_model // TQ_BLOCK) * TQ_BLOCK
    for d_model in range(first, MAX_RATIO * cfg.d_model + 1, TQ_BLOCK):
        ratio = Fraction(d_model, cfg.d_model)
        d_ff, n_heads = cfg.d_ff * ratio, cfg.n_heads * ratio
        if (d_ff.denominator == 1 and d_ff % TQ_BLOCK == 0 and n_heads.denominator == 1
                and n_heads * cfg.head_dim == d_model and (n_heads - cfg.n_heads) % group == 0):
            return PaddedShape(ratio, d_model, int(d_ff), int(n_heads),
                               cfg.n_kv_heads + int(n_heads - cfg.n_heads) // group)
    return None


def _pad(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """`a` in the top-left corner of a zero array of `shape`."""
    out = np.zeros(shape, a.dtype)
    out[tuple(slice(0, n) for n in a.shape)] = a
    return out


def pad_model(model: TernaryModel, shape: PaddedShape) -> TernaryModel:
    """`model` stored with the widths of `shape`: the same function of the tokens (see the module docstring)."""
    cfg = model.config
    new = dataclasses.replace(cfg, d_model=shape.d_model, d_ff=shape.d_ff, n_heads=shape.n_heads,
                              n_kv_heads=shape.n_kv_heads, norm_eps=cfg.norm_eps / float(shape.ratio))
    q, kv = new.n_heads * new.head_dim, new.n_kv_heads * new.head_dim
    out_in = {"q_proj": (q, new.d_model), "k_proj": (kv, new.d_model), "v_proj": (kv, new.d_model),
              "o_proj": (new.d_model, q), "gate_proj": (new.d_ff, new.d_model), "up_proj": (new.d_ff, new.d_model),
              "down_proj": (new.d_model, new.d_ff)}
    norm_scale = np.float32(np.sqrt(1.0 / float(shape.ratio)))
    norm_width = {"input_layernorm": new.d_model, "post_attention_layernorm": new.d_model, "norm": new.d_model,
                  "attn_sub_norm": q, "ffn_sub_norm": new.d_ff}
    dense = {}
    for name, array in model.dense.items():
        leaf = name.rsplit(".", 1)[-1]
        if name in ("embed_tokens", "lm_head"):
            dense[name] = _pad(array, (array.shape[0], new.d_model))
        elif leaf in norm_width:
            dense[name] = _pad(array * norm_scale, (norm_width[leaf],))
        else:   # a linear of a full-precision block
            dense[name] = _pad(array, out_in[leaf])
    ternary = {name: TernaryTensor(_pad(t.codes_OI, out_in[name.rsplit(".", 1)[-1]]), t.scale)
               for name, t in model.ternary.items()}
    biases = {name: _pad(b, out_in[name.rsplit(".", 1)[-1]][:1]) for name, b in model.biases.items()}
    return dataclasses.replace(model, config=new, dense=dense, ternary=ternary, biases=biases)
