"""Which architecture a ternary student leaves bitjax in, and what each runtime architecture can hold.

A student with SubLN norms (BitNet's block) exports as `bitnet`: llama.cpp's bitnet graph, transformers'
`BitNetForCausalLM`. A student without them kept the architecture of the model it was converted from and
exports in it, so the runtimes run it with their own graph for that architecture:

    sub_norms              -> bitnet
    qk_norm (per-head)     -> qwen3     (LlamaForCausalLM's cousin with q/k RMSNorm; Qwen3ForCausalLM)
    attention_bias (q/k/v) -> qwen2     (Qwen2ForCausalLM)
    neither                -> llama     (LlamaForCausalLM; SmolLM2, Llama 3.x, Mistral without a window)

llama.cpp multiplies TQ2_0/TQ1_0 tensors in any of these graphs with the same kernels (activations rounded to
8 bits per 256-value block, Q8_K) it uses in bitnet; transformers loads the packed 2-bit weights into any of
them through its BitNet quantizer (`quantization_config` quant_method "bitnet": every nn.Linear but the head
becomes an `AutoBitLinear`). `gguf_problems` and `packed_problems` list, in one line each, what a student has
that its architecture cannot hold in that format: nothing is dropped silently.
"""

from __future__ import annotations

import dataclasses

from bitjax.nn.model_config import ModelConfig


@dataclasses.dataclass(frozen=True)
class Architecture:
    name: str                     # GGUF `general.architecture` and HF `model_type`
    hf_class: str                 # transformers' class for the packed format
    biases: bool                  # q/k/v biases
    qk_norm: bool                 # per-head q/k RMSNorm
    untied_head: bool             # a separate output head
    gguf_rope: tuple[str, ...]    # RoPE scalings written for llama.cpp's graph of this architecture
    hf_rope: tuple[str, ...]      # RoPE scalings written in transformers' config.json (each one run by
                                  # tests/export/test_export_rope_scaling.py)
    interleaved_rope: bool        # llama.cpp rotates interleaved pairs: q/k rows stored permuted (llama)
    scale_tensors: bool           # llama.cpp reads a per-tensor `.scale` beside each ternary weight (bitnet)
    any_head_width: bool          # the query width n_heads * head_dim may differ from d_model


BITNET = Architecture("bitnet", "BitNetForCausalLM", biases=False, qk_norm=False, untied_head=False,
                      gguf_rope=("none",), hf_rope=("none",),
                      interleaved_rope=False, scale_tensors=True, any_head_width=False)
LLAMA = Architecture("llama", "LlamaForCausalLM", biases=False, qk_norm=False, untied_head=True,
                     gguf_rope=("none", "linear", "yarn", "llama3", "freq_factors"),
                     hf_rope=("none", "linear", "llama3", "yarn"), interleaved_rope=True, scale_tensors=False,
                     any_head_width=True)
QWEN2 = Architecture("qwen2", "Qwen2ForCausalLM", biases=True, qk_norm=False, untied_head=True,
                     gguf_rope=("none", "linear", "yarn"), hf_rope=("none", "linear", "yarn"),
                     interleaved_rope=False, scale_tensors=False, any_head_width=True)
QWEN3 = Architecture("qwen3", "Qwen3ForCausalLM", biases=False, qk_norm=True, untied_head=True,
                     gguf_rope=("none", "linear", "yarn"), hf_rope=("none", "linear", "yarn"),
                     interleaved_rope=False, scale_tensors=False, any_head_width=True)
ARCHITECTURES = {a.name: a for a in (BITNET, LLAMA, QWEN2, QWEN3)}


def architecture(cfg: ModelConfig) -> Architecture:
    """The runtime architecture a student of `cfg` exports as (see the module docstring)."""
    if cfg.sub_norms:
        return BITNET
    if cfg.qk_norm:
        return QWEN3
    return QWEN2 if cfg.attention_bias else LLAMA


def _holds(cfg: ModelConfig, arch: Architecture, rope: tuple[str, ...], fmt: str) -> list[str]:
    fix = ("train the student without SubLN (model.sub_norms=false) to export it in its source's architecture"
           if arch is BITNET else "")
    problems = []
    for present, allowed, what in ((cfg.attention_bias, arch.biases, "q/k/v biases (model.attention_bias)"),
                                   (cfg.qk_norm, arch.qk_norm, "per-head q/k norms (model.qk_norm)"),
                                   (not cfg.tie_embeddings, arch.untied_head,
                                    "an untied head (model.tie_embeddings=false)")):
        if present and not allowed:
            problems.append(f"the student has {what}, which the {arch.name} architecture has no place for in "
                            f"{fmt}; {fix or 'no runtime architecture holds that combination'}")
    if cfg.rope_scaling.kind not in rope:
        problems.append(f"model.rope_scaling.kind={cfg.rope_scaling.kind!r}: the {arch.name} architecture in {fmt} "
                        f"has no such RoPE scaling (it has {', '.join(rope)})")
    if not arch.any_head_width and cfg.n_heads * cfg.head_dim != cfg.d_model:
        problems.append(f"model.n_heads * model.head_dim = {cfg.n_heads * cfg.head_dim} differs from model.d_model "
                        f"= {cfg.d_model}; llama.cpp's bitnet and transformers' BitNet need them equal")
    if arch is not BITNET and cfg.ffn_activation != "silu":
        problems.append(f"model.ffn_activation={cfg.ffn_activation!r}: the {arch.name} architecture's FFN is "
                        "SiLU-gated in both runtimes; export a SiLU student")
    return problems


def gguf_problems(cfg: ModelConfig) -> list[str]:
    """What the student's GGUF architecture cannot hold (empty: it can be written)."""
    return _holds(cfg, architecture(cfg), architecture(cfg).gguf_rope, "GGUF")


def packed_problems(cfg: ModelConfig) -> list[str]:
    """What the student's transformers architecture cannot hold (empty: it can be written)."""
    return _holds(cfg, architecture(cfg), architecture(cfg).hf_rope, "transformers' packed format")
