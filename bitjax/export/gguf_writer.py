"""GGUF files for llama.cpp, written and read back with the `gguf` library: a student in its runtime architecture.

The architecture (bitjax.export.architectures) is `bitnet` for a student with SubLN norms, else the source's own
`llama`, `qwen2` or `qwen3`; gguf_layout.py names the tensors and says how each architecture holds a ternary
scale. Tensors (row-major (out, in) here; GGUF lists dimensions innermost first):
  token_embd.weight           (V, D)  --embedding-type: Q6_K by default beside TQ2_0/TQ1_0, F16 for --type f16,
                              F32 for --type f32 (see embedding_quant.py); also the head when it is tied
  output.weight               (V, D)  an untied head (llama, qwen2, qwen3), in the same type as the embedding
  output_norm.weight, blk.N.{attn_norm, ffn_norm}.weight, and where the student has them
  blk.N.{attn_sub_norm, ffn_sub_norm}.weight (bitnet), blk.N.{attn_q_norm, attn_k_norm}.weight (qwen3)   F32
  blk.N.{attn_q, attn_k, attn_v}.bias   (qwen2) F32, in the file's row order
  blk.N.{attn_q, attn_k, attn_v, attn_output, ffn_gate, ffn_up, ffn_down}.weight
                              ternary, stored as the chosen type: bitnet holds the codes in {-1, 0, 1} (every
                              TQ block scale `d` 1, or 0 for an all-zero block) and
  blk.N.<same>.scale          (1,) F32, the exact absmean scale llama.cpp multiplies the matmul by; the other
                              architectures hold codes x scale (gguf_layout.py)
  rope_freqs.weight           (H / 2,) F32: Llama 3.x's RoPE scaling, one divisor per rotary pair (llama)
  the same linears of a block in `model.full_precision_layers`: the latent weights as F16 (F32 for --type f32),
                              no scale; llama.cpp then multiplies unquantized activations, as bitjax does there
The tensors are streamed (`add_tensor_info`, then `write_tensor_data`), so a 2B model never sits in memory
twice, and the file is written under a temporary name, read back, checked (gguf_verify.py), then renamed.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Callable

import gguf
import numpy as np
from tqdm import tqdm

from bitjax.export import architectures, checks, padding
from bitjax.export import embedding_quant as emb_quant
from bitjax.export.common import ExportError, atomic_file
from bitjax.export.gguf_layout import BLOCK_TENSORS, ROPE_FREQS, gguf_name, stored_rows, ternary_values
from bitjax.export.gguf_tokenizer import GGUFVocab, add_tokenizer, read_vocab
from bitjax.export.gguf_verify import read_ternary, verify_gguf  # noqa: F401  (read_ternary: this module's API)
from bitjax.export.model_source import TernaryModel
from bitjax.nn import rope
from bitjax.paths import user_path

ARCH = gguf.MODEL_ARCH.BITNET
ARCH_NAME = gguf.MODEL_ARCH_NAMES[ARCH]   # the architecture of a student with SubLN
QTYPES = {
    "tq2_0": gguf.GGMLQuantizationType.TQ2_0,
    "tq1_0": gguf.GGMLQuantizationType.TQ1_0,
    "f16": gguf.GGMLQuantizationType.F16,
    "f32": gguf.GGMLQuantizationType.F32,
}
FILE_TYPES = {
    "tq2_0": gguf.LlamaFileType.MOSTLY_TQ2_0,
    "tq1_0": gguf.LlamaFileType.MOSTLY_TQ1_0,
    "f16": gguf.LlamaFileType.MOSTLY_F16,
    "f32": gguf.LlamaFileType.ALL_F32,
}
ROPE_SCALING_TYPES = {"linear": gguf.RopeScalingType.LINEAR, "yarn": gguf.RopeScalingType.YARN}


@dataclasses.dataclass(frozen=True)
class PlannedTensor:
    name: str
    byte_shape: tuple[int, ...]
    np_dtype: type
    raw_dtype: gguf.GGMLQuantizationType | None
    produce: Callable[[], np.ndarray]

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.byte_shape)) * np.dtype(self.np_dtype).itemsize


def _ternary_plan(name: str, values_OI: Callable[[], np.ndarray], shape_OI: tuple[int, int],
                  qtype: gguf.GGMLQuantizationType) -> PlannedTensor:
    out_features, in_features = shape_OI
    if qtype in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
        np_dtype = np.float32 if qtype == gguf.GGMLQuantizationType.F32 else np.float16
        return PlannedTensor(name, (out_features, in_features), np_dtype, None, lambda: values_OI().astype(np_dtype))
    block, type_size = gguf.GGML_QUANT_SIZES[qtype]
    byte_shape = (out_features, in_features // block * type_size)
    return PlannedTensor(name, byte_shape, np.uint8, qtype, lambda: gguf.quants.quantize(values_OI(), qtype))


def plan_tensors(model: TernaryModel, gguf_type: str, embedding_type: str | None = None) -> list[PlannedTensor]:
    """Every tensor of the file in order. `embedding_type` defaults to the type's default; a type llama.cpp
    quantizes (q6_k, ...) is planned at its final size, but only `staging_type`s can be produced here."""
    qtype = QTYPES[gguf_type]
    cfg, arch = model.config, architectures.architecture(model.config)
    embedding_type = embedding_type or emb_quant.default_embedding_type(gguf_type)
    plan = [_head_plan(model, "embed_tokens", embedding_type), _dense_plan(model, "norm")]
    if "lm_head" in model.dense:
        plan.append(_head_plan(model, "lm_head", embedding_type))
    if (factors := rope_freq_factors(model)) is not None:
        plan.append(PlannedTensor(ROPE_FREQS, factors.shape, np.float32, None, lambda: factors))
    for i in range(cfg.n_layers):
        for suffix in BLOCK_TENSORS:
            path = f"layers.{i}.{suffix}"
            if path in model.ternary:
                tensor = model.ternary[path]
                plan.append(_ternary_plan(
                    f"{gguf_name(path)}.weight",
                    lambda p=path, t=tensor: stored_rows(arch, cfg, p, ternary_values(arch, gguf_type, t)),
                    tensor.codes_OI.shape, qtype))
                if arch.scale_tensors:
                    plan.append(PlannedTensor(f"{gguf_name(path)}.scale", (1,), np.float32, None,
                                              lambda s=tensor.scale: np.asarray([s], np.float32)))
            elif path in model.dense:
                plan.append(_dense_plan(model, path, full_precision_dtype(gguf_type, path, model)))
            if path in model.biases:
                bias = stored_rows(arch, cfg, path, model.biases[path])
                plan.append(PlannedTensor(f"{gguf_name(path)}.bias", bias.shape, np.float32, None, lambda b=bias: b))
    return plan


def rope_freq_factors(model: TernaryModel) -> np.ndarray | None:
    """The `rope_freqs` tensor of a Llama 3.x scaling (one divisor per rotary pair), or None."""
    cfg = model.config
    if cfg.rope_scaling.kind == "llama3":
        return rope.llama3_freq_factors(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling).astype(np.float32)
    if cfg.rope_scaling.kind == "freq_factors":
        return np.asarray(cfg.rope_scaling.freq_factors, np.float32)
    return None


def full_precision_dtype(gguf_type: str, path: str, model: TernaryModel) -> type:
    """A dense tensor's numpy type in the file: F16 for a full-precision block's linears (F32 with --type f32),
    F32 for the norms."""
    return np.float16 if path in model.full_precision and gguf_type != "f32" else np.float32


def _head_plan(model: TernaryModel, path: str, embedding_type: str) -> PlannedTensor:
    """The embedding or an untied head (V, D) in `embedding_type`."""
    array = model.dense[path]
    byte_shape, np_dtype, raw = emb_quant.embedding_bytes(embedding_type, array.shape)
    return PlannedTensor(f"{gguf_name(path)}.weight", byte_shape, np_dtype, raw,
                         lambda: emb_quant.encode_embedding(array, embedding_type))


def _dense_plan(model: TernaryModel, path: str, np_dtype: type = np.float32) -> PlannedTensor:
    array = stored_rows(architectures.architecture(model.config), model.config, path, model.dense[path])
    return PlannedTensor(f"{gguf_name(path)}.weight", array.shape, np_dtype, None, lambda: array.astype(np_dtype))


def add_hyperparameters(writer: gguf.GGUFWriter, model: TernaryModel, gguf_type: str,
                        embedding_type: str | None = None) -> None:
    cfg = model.config
    embedding_type = embedding_type or emb_quant.default_embedding_type(gguf_type)
    writer.add_name(model.name)
    if model.warnings:
        writer.add_description("; ".join(model.warnings))
    writer.add_file_type(FILE_TYPES[gguf_type])
    if gguf_type.startswith("tq") or embedding_type not in ("f16", "f32"):
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_vocab_size(cfg.vocab_size)
    writer.add_context_length(cfg.max_seq_len)
    writer.add_embedding_length(cfg.d_model)
    writer.add_block_count(cfg.n_layers)
    writer.add_feed_forward_length(cfg.d_ff)
    writer.add_head_count(cfg.n_heads)
    writer.add_head_count_kv(cfg.n_kv_heads)
    writer.add_key_length(cfg.head_dim)
    writer.add_value_length(cfg.head_dim)
    writer.add_rope_dimension_count(cfg.head_dim)
    writer.add_rope_freq_base(cfg.rope_theta)
    scaling = cfg.rope_scaling
    if scaling.kind in ROPE_SCALING_TYPES:
        writer.add_rope_scaling_type(ROPE_SCALING_TYPES[scaling.kind])
        writer.add_rope_scaling_factor(scaling.factor)
    if scaling.kind == "yarn":
        writer.add_rope_scaling_orig_ctx_len(scaling.original_max_len)
        writer.add_rope_scaling_yarn_beta_fast(scaling.beta_fast)
        writer.add_rope_scaling_yarn_beta_slow(scaling.beta_slow)
    writer.add_layer_norm_rms_eps(cfg.norm_eps)
    if architectures.architecture(cfg).name == ARCH_NAME:
        writer.add_string(f"{ARCH_NAME}.hidden_activation", cfg.ffn_activation)


def write_gguf(model: TernaryModel, out: str | Path, gguf_type: str, *, embedding_type: str | None = None,
               force: bool = False, allow_runtime_mismatch: bool = False, progress: bool = False) -> Path:
    """Write `model` as a llama.cpp GGUF in its architecture; raises ExportError before writing anything it
    cannot do."""
    if gguf_type not in QTYPES:
        raise ExportError(f"--type {gguf_type} is not supported; use one of {', '.join(QTYPES)}")
    embedding_type = embedding_type or emb_quant.default_embedding_type(gguf_type)
    out = user_path(out, "output")
    problems = architectures.gguf_problems(model.config)
    if gguf_type.startswith("tq") and not problems:
        model, problems = _tq_widths(model, gguf_type)
    if problems:
        raise ExportError(problems[0])
    emb_quant.check_embedding_type(embedding_type, model.config.d_model)
    mismatch = checks.gguf_activation_problems(model.config)
    if mismatch and not allow_runtime_mismatch:
        raise ExportError(mismatch[0] + "; or pass --allow-runtime-mismatch to write it anyway")
    if model.tokenizer_path is None:
        raise ExportError("GGUF export needs the run's tokenizer.json; none was given")
    vocab = read_vocab(model.tokenizer_path, model.config.vocab_size)

    staged_type = emb_quant.staging_type(embedding_type)
    plan = plan_tensors(model, gguf_type, staged_type)
    with atomic_file(out, force) as tmp:
        if staged_type == embedding_type:
            _write_plan(tmp, model, gguf_type, staged_type, vocab, plan, progress, out.name)
        else:  # llama.cpp quantizes the embedding of a staged file with an F32 one
            staged = tmp.with_name(tmp.name + ".f32-embedding")
            try:
                _write_plan(staged, model, gguf_type, staged_type, vocab, plan, progress, out.name)
                emb_quant.quantize_embedding_with_llama_cpp(staged, tmp, gguf_type, embedding_type,
                                                            untied_head="lm_head" in model.dense)
            finally:
                staged.unlink(missing_ok=True)
        verify_gguf(tmp, model, gguf_type, vocab, embedding_type)
    return out


def _tq_widths(model: TernaryModel, gguf_type: str) -> tuple[TernaryModel, list[str]]:
    """The model as the TQ type can hold it: as it is, zero-padded to wider widths (said on stderr), or not at
    all (the problems, naming a tensor)."""
    problems = checks.tq_width_problems(model, gguf_type, {n: gguf_name(n) for n in model.ternary})
    if not problems:
        return model, []
    shape = padding.padded_shape(model.config)
    if shape is None:
        return model, [problems[0] + " (no common zero-padding ratio up to 2x makes them so)"]
    if model.config.qk_norm:   # GGUF has one norm epsilon: padding divides it, the unpadded q/k norms would see that
        return model, [problems[0] + " (zero padding changes the norm epsilon, which the q/k norms over unpadded "
                       "heads share; widths that are multiples of 256 need none)"]
    old_codes = sum(t.codes_OI.size for t in model.ternary.values())
    padded = padding.pad_model(model, shape)
    growth = sum(t.codes_OI.size for t in padded.ternary.values()) / old_codes
    print(f"bitjax: note: {gguf_type} stores rows in blocks of {checks.TQ_BLOCK}; writing this model zero-padded "
          f"({shape.describe(model.config)}, norm epsilon x{shape.ratio.denominator}/{shape.ratio.numerator}), the "
          f"same network with {growth:.2f}x the ternary codes (see docs/export.md)", file=sys.stderr, flush=True)
    return padded, []


def _write_plan(path: Path, model: TernaryModel, gguf_type: str, embedding_type: str, vocab: GGUFVocab,
                plan: list[PlannedTensor], progress: bool, label: str) -> None:
    writer = gguf.GGUFWriter(path, architectures.architecture(model.config).name)
    add_hyperparameters(writer, model, gguf_type, embedding_type)
    add_tokenizer(writer, vocab)
    for t in plan:
        writer.add_tensor_info(t.name, t.byte_shape, np.dtype(t.np_dtype), t.nbytes, raw_dtype=t.raw_dtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for t in tqdm(plan, desc=f"writing {label}", unit="tensor", disable=not progress):
        data = t.produce()
        if data.shape != t.byte_shape:
            raise AssertionError(f"{t.name}: produced {data.shape}, planned {t.byte_shape}")
        writer.write_tensor_data(data)
    writer.close()
