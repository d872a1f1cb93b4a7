"""A written GGUF read back and checked against the model before it takes its name (gguf_writer.write_gguf).

Every ternary code must equal the training quantizer's and every scale the one the runtime multiplies by
(gguf_layout.stored_scale: exact in a bitnet `.scale` tensor, the fp16 block scale elsewhere), in the file's
row order (gguf_layout.stored_rows); full-precision linears, biases, norms and RoPE factors bit for bit; the
embedding and an untied head in their type within its error bound; the tokenizer and the architecture present.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

from bitjax.export import architectures
from bitjax.export import embedding_quant as emb_quant
from bitjax.export.common import ExportError
from bitjax.export.gguf_layout import ROPE_FREQS, gguf_name, stored_rows, stored_scale
from bitjax.export.gguf_tokenizer import GGUFVocab
from bitjax.export.model_source import TernaryModel


def read_ternary(path: str | Path, names: list[str] | None = None
                 ) -> tuple[gguf.GGUFReader, dict[str, np.ndarray], dict[str, np.float32]]:
    """Read ternary tensors back: codes ((out, in), in the file's row order) and scales, by GGUF tensor name.

    A bitnet file says which tensors are ternary (each has a `.scale`); in the other architectures the scale is
    in the weight, so `names` (GGUF tensor names without `.weight`) says which, and each tensor's scale is its
    largest magnitude (a tensor of zeros reads back with scale 0).
    """
    reader = gguf.GGUFReader(path)
    tensors = {t.name: t for t in reader.tensors}
    scaled = [name[:-len(".scale")] for name in tensors if name.endswith(".scale")]
    codes, scales = {}, {}
    for base in scaled or names or []:
        weight = tensors.get(f"{base}.weight")
        if weight is None:
            continue
        values = gguf.quants.dequantize(weight.data, weight.tensor_type).astype(np.float32)
        if scaled:
            codes[base] = values
            scales[base] = np.float32(np.asarray(tensors[f"{base}.scale"].data).reshape(-1)[0])
        else:
            scale = np.float32(np.abs(values).max()) if values.size else np.float32(0)
            codes[base] = values / scale if scale else values
            scales[base] = scale
    return reader, codes, scales


def verify_gguf(path: Path, model: TernaryModel, gguf_type: str, vocab: GGUFVocab,
                embedding_type: str | None = None) -> None:
    """Every code read back equals the quantizer's, every scale is the one written, the embedding (and an untied
    head) has its type and values (within the type's error), and the metadata is complete."""
    cfg, arch = model.config, architectures.architecture(model.config)
    reader, codes, scales = read_ternary(path, [gguf_name(m) for m in model.ternary])
    embedding_type = embedding_type or emb_quant.default_embedding_type(gguf_type)
    emb_quant.verify_embedding(path, reader, model.dense["embed_tokens"], embedding_type)
    if "lm_head" in model.dense:
        emb_quant.verify_embedding(path, reader, model.dense["lm_head"], embedding_type, "output.weight")
    for module, tensor in model.ternary.items():
        name = gguf_name(module)
        if name not in codes:
            raise ExportError(f"{path}: {name} missing on read-back")
        want = stored_rows(arch, cfg, module, tensor.codes_OI)
        got = codes[name]
        if got.shape != want.shape or not np.array_equal(got, want):
            bad = int(np.sum(got != want)) if got.shape == want.shape else "all"
            raise ExportError(f"{path}: {bad} codes of {name} ({gguf_type}) read back differ from the quantizer's")
        scale = stored_scale(arch, gguf_type, tensor.scale)
        if scales[name] != scale and np.any(want):
            where = f"{name}.scale" if arch.scale_tensors else f"{name}'s scale (its block scales)"
            raise ExportError(f"{path}: {where} reads back as {scales[name]}, not {scale}")
    stored = {t.name: t for t in reader.tensors}

    def check_exact(name: str, want: np.ndarray, what: str) -> None:
        got = np.asarray(stored[name].data) if name in stored else None
        if got is None or got.shape != want.shape or not np.array_equal(got, want):
            raise ExportError(f"{path}: {name} ({what}) reads back different")

    for module in model.full_precision:
        want = stored_rows(arch, cfg, module, model.dense[module])
        check_exact(f"{gguf_name(module)}.weight", want.astype(np.float32 if gguf_type == "f32" else np.float16),
                    "a full-precision block's linear")
    for module, bias in model.biases.items():
        check_exact(f"{gguf_name(module)}.bias", stored_rows(arch, cfg, module, bias), "a bias")
    for module, scale in model.dense.items():
        if module.rsplit(".", 1)[-1].endswith("norm"):
            check_exact(f"{gguf_name(module)}.weight", scale.astype(np.float32), "a norm scale")
    if cfg.rope_scaling.kind in ("llama3", "freq_factors") and ROPE_FREQS not in stored:
        raise ExportError(f"{path}: {ROPE_FREQS} (the RoPE scaling) missing on read-back")
    tokens = reader.get_field(gguf.Keys.Tokenizer.LIST)
    if tokens is None or len(tokens.data) != len(vocab.tokens):
        raise ExportError(f"{path}: tokenizer tokens missing or truncated on read-back")
    field = reader.get_field(gguf.Keys.General.ARCHITECTURE)
    if field is None or field.contents() != arch.name:
        raise ExportError(f"{path}: general.architecture is not {arch.name!r} on read-back")
