"""GGUF files for llama.cpp's `bitnet` architecture, written and read back with the `gguf` library.

Tensors (row-major (out, in) here; GGUF lists dimensions innermost first):
  token_embd.weight           (V, D)  --embedding-type: Q6_K by default beside TQ2_0/TQ1_0, F16 for --type f16,
                              F32 for --type f32 (see embedding_quant.py); also the tied output head
  output_norm.weight, blk.N.{attn_norm, attn_sub_norm, ffn_norm, ffn_sub_norm}.weight   F32
  blk.N.{attn_q, attn_k, attn_v, attn_output, ffn_gate, ffn_up, ffn_down}.weight
                              ternary codes in {-1, 0, 1}, stored as the chosen type; for TQ2_0/TQ1_0 every
                              block scale `d` is 1 (or 0 for an all-zero block), so codes are exact
  blk.N.<same>.scale          (1,) F32: the exact absmean scale; llama.cpp multiplies the matmul by it
  the same linears of a block in `model.full_precision_layers`: the latent weights as F16 (F32 for --type f32),
                              no scale; llama.cpp then multiplies unquantized activations, as bitjax does there
The tensors are streamed (`add_tensor_info`, then `write_tensor_data`), so a 2B model never sits in memory
twice, and the file is written under a temporary name, read back, checked, then renamed.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Callable

import gguf
import numpy as np
from tqdm import tqdm

from bitjax.export import checks, padding
from bitjax.export import embedding_quant as emb_quant
from bitjax.export.common import ExportError, atomic_file
from bitjax.export.gguf_tokenizer import GGUFVocab, add_tokenizer, read_vocab
from bitjax.export.model_source import TernaryModel
from bitjax.paths import user_path

ARCH = gguf.MODEL_ARCH.BITNET
ARCH_NAME = gguf.MODEL_ARCH_NAMES[ARCH]
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
# bitjax module path suffix -> llama.cpp tensor kind (names come from gguf's constants)
BLOCK_TENSORS = {
    "input_layernorm": gguf.MODEL_TENSOR.ATTN_NORM,
    "self_attn.q_proj": gguf.MODEL_TENSOR.ATTN_Q,
    "self_attn.k_proj": gguf.MODEL_TENSOR.ATTN_K,
    "self_attn.v_proj": gguf.MODEL_TENSOR.ATTN_V,
    "self_attn.attn_sub_norm": gguf.MODEL_TENSOR.ATTN_SUB_NORM,
    "self_attn.o_proj": gguf.MODEL_TENSOR.ATTN_OUT,
    "post_attention_layernorm": gguf.MODEL_TENSOR.FFN_NORM,
    "mlp.gate_proj": gguf.MODEL_TENSOR.FFN_GATE,
    "mlp.up_proj": gguf.MODEL_TENSOR.FFN_UP,
    "mlp.ffn_sub_norm": gguf.MODEL_TENSOR.FFN_SUB_NORM,
    "mlp.down_proj": gguf.MODEL_TENSOR.FFN_DOWN,
}
TOP_TENSORS = {"embed_tokens": gguf.MODEL_TENSOR.TOKEN_EMBD, "norm": gguf.MODEL_TENSOR.OUTPUT_NORM}


def gguf_name(module_path: str) -> str:
    """`layers.3.mlp.up_proj` -> `blk.3.ffn_up`; `embed_tokens` -> `token_embd`."""
    if module_path in TOP_TENSORS:
        return gguf.TENSOR_NAMES[TOP_TENSORS[module_path]]
    _, layer, suffix = module_path.split(".", 2)
    return gguf.TENSOR_NAMES[BLOCK_TENSORS[suffix]].format(bid=int(layer))


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


def _ternary_plan(name: str, codes_OI: np.ndarray, qtype: gguf.GGMLQuantizationType) -> PlannedTensor:
    out_features, in_features = codes_OI.shape
    if qtype in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
        np_dtype = np.float32 if qtype == gguf.GGMLQuantizationType.F32 else np.float16
        return PlannedTensor(name, (out_features, in_features), np_dtype, None,
                             lambda: codes_OI.astype(np_dtype))
    block, type_size = gguf.GGML_QUANT_SIZES[qtype]
    byte_shape = (out_features, in_features // block * type_size)
    return PlannedTensor(name, byte_shape, np.uint8, qtype,
                         lambda: gguf.quants.quantize(codes_OI.astype(np.float32), qtype))


def plan_tensors(model: TernaryModel, gguf_type: str, embedding_type: str | None = None) -> list[PlannedTensor]:
    """Every tensor of the file in order. `embedding_type` defaults to the type's default; a type llama.cpp
    quantizes (q6_k, ...) is planned at its final size, but only `staging_type`s can be produced here."""
    qtype = QTYPES[gguf_type]
    embedding_type = embedding_type or emb_quant.default_embedding_type(gguf_type)
    embedding = model.dense["embed_tokens"]
    byte_shape, np_dtype, raw = emb_quant.embedding_bytes(embedding_type, embedding.shape)
    plan = [PlannedTensor(f"{gguf_name('embed_tokens')}.weight", byte_shape, np_dtype, raw,
                          lambda: emb_quant.encode_embedding(embedding, embedding_type)),
            _dense_plan(model, "norm")]
    for i in range(model.config.n_layers):
        for suffix in BLOCK_TENSORS:
            path = f"layers.{i}.{suffix}"
            if path in model.ternary:
                tensor = model.ternary[path]
                plan.append(_ternary_plan(f"{gguf_name(path)}.weight", tensor.codes_OI, qtype))
                plan.append(PlannedTensor(f"{gguf_name(path)}.scale", (1,), np.float32, None,
                                          lambda s=tensor.scale: np.asarray([s], np.float32)))
            else:
                plan.append(_dense_plan(model, path, full_precision_dtype(gguf_type, path, model)))
    return plan


def full_precision_dtype(gguf_type: str, path: str, model: TernaryModel) -> type:
    """A dense tensor's numpy type in the file: F16 for a full-precision block's linears (F32 with --type f32),
    F32 for the norms."""
    return np.float16 if path in model.full_precision and gguf_type != "f32" else np.float32


def _dense_plan(model: TernaryModel, path: str, np_dtype: type = np.float32) -> PlannedTensor:
    array = model.dense[path]
    return PlannedTensor(f"{gguf_name(path)}.weight", array.shape, np_dtype, None, lambda: array.astype(np_dtype))


def add_hyperparameters(writer: gguf.GGUFWriter, model: TernaryModel, gguf_type: str,
                        embedding_type: str | None = None) -> None:
    cfg = model.config
    embedding_type = embedding_type or emb_quant.default_embedding_type(gguf_type)
    writer.add_name(model.name)
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
    writer.add_layer_norm_rms_eps(cfg.norm_eps)
    writer.add_string(f"{ARCH_NAME}.hidden_activation", cfg.ffn_activation)


def write_gguf(model: TernaryModel, out: str | Path, gguf_type: str, *, embedding_type: str | None = None,
               force: bool = False, allow_runtime_mismatch: bool = False, progress: bool = False) -> Path:
    """Write `model` as a llama.cpp `bitnet` GGUF; raises ExportError before writing anything it cannot do."""
    if gguf_type not in QTYPES:
        raise ExportError(f"--type {gguf_type} is not supported; use one of {', '.join(QTYPES)}")
    embedding_type = embedding_type or emb_quant.default_embedding_type(gguf_type)
    out = user_path(out, "output")
    problems = checks.head_shape_problems(model.config)
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
                emb_quant.quantize_embedding_with_llama_cpp(staged, tmp, gguf_type, embedding_type)
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
    old_codes = sum(t.codes_OI.size for t in model.ternary.values())
    padded = padding.pad_model(model, shape)
    growth = sum(t.codes_OI.size for t in padded.ternary.values()) / old_codes
    print(f"bitjax: note: {gguf_type} stores rows in blocks of {checks.TQ_BLOCK}; writing this model zero-padded "
          f"({shape.describe(model.config)}, norm epsilon x{shape.ratio.denominator}/{shape.ratio.numerator}), the "
          f"same network with {growth:.2f}x the ternary codes (see docs/export.md)", file=sys.stderr, flush=True)
    return padded, []


def _write_plan(path: Path, model: TernaryModel, gguf_type: str, embedding_type: str, vocab: GGUFVocab,
                plan: list[PlannedTensor], progress: bool, label: str) -> None:
    writer = gguf.GGUFWriter(path, ARCH_NAME)
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


def read_ternary(path: str | Path) -> tuple[gguf.GGUFReader, dict[str, np.ndarray], dict[str, np.float32]]:
    """Read a bitnet GGUF back: codes (dequantized, (out, in)) and scales, keyed by GGUF tensor name."""
    reader = gguf.GGUFReader(path)
    tensors = {t.name: t for t in reader.tensors}
    codes, scales = {}, {}
    for name, t in tensors.items():
        if name.endswith(".scale"):
            base = name[:-len(".scale")]
            weight = tensors[f"{base}.weight"]
            codes[base] = gguf.quants.dequantize(weight.data, weight.tensor_type)
            scales[base] = np.float32(np.asarray(t.data).reshape(-1)[0])
    return reader, codes, scales


def verify_gguf(path: Path, model: TernaryModel, gguf_type: str, vocab: GGUFVocab,
                embedding_type: str | None = None) -> None:
    """Every code read back equals the quantizer's, every scale is bit-exact, the embedding has its type and
    values (within the type's error), and the metadata is complete."""
    reader, codes, scales = read_ternary(path)
    emb_quant.verify_embedding(path, reader, model.dense["embed_tokens"],
                               embedding_type or emb_quant.default_embedding_type(gguf_type))
    for module, tensor in model.ternary.items():
        name = gguf_name(module)
        if name not in codes:
            raise ExportError(f"{path}: {name} missing on read-back")
        if codes[name].shape != tensor.codes_OI.shape or not np.array_equal(codes[name], tensor.codes_OI):
            bad = int(np.sum(codes[name] != tensor.codes_OI)) if codes[name].shape == tensor.codes_OI.shape else "all"
            raise ExportError(f"{path}: {bad} codes of {name} ({gguf_type}) read back differ from the quantizer's")
        if scales[name] != tensor.scale:
            raise ExportError(f"{path}: {name}.scale reads back as {scales[name]}, not {tensor.scale}")
    stored = {t.name: t for t in reader.tensors}
    for module in model.full_precision:
        name, want = f"{gguf_name(module)}.weight", model.dense[module].astype(full_precision_dtype(gguf_type, module,
                                                                                                     model))
        got = np.asarray(stored[name].data) if name in stored else None
        if got is None or got.shape != want.shape or not np.array_equal(got, want):
            raise ExportError(f"{path}: {name} (a full-precision block's linear) reads back different")
    tokens = reader.get_field(gguf.Keys.Tokenizer.LIST)
    if tokens is None or len(tokens.data) != len(vocab.tokens):
        raise ExportError(f"{path}: tokenizer tokens missing or truncated on read-back")
    arch = reader.get_field(gguf.Keys.General.ARCHITECTURE)
    if arch is None or arch.contents() != ARCH_NAME:
        raise ExportError(f"{path}: general.architecture is not {ARCH_NAME!r} on read-back")
