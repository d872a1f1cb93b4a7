"""The embedding and LM head of a GGUF export, in a quantized type (`--embedding-type`).

A tied head is the token embedding (llama.cpp's `bitnet` graph has no `output` tensor and multiplies by
`token_embd`), so one type covers both; an untied head (a llama, qwen2 or qwen3 student) is `output.weight`,
written in the same type as the embedding: there is no separate head type to choose.
At the 700m shape the embedding is about 39% of a TQ2_0 file with an F16 embedding, and the head is read
in full for every decoded token, so its type sets much of the file size and of the decode speed.

Two quantizers, both the reference implementations of their formats:
  f32, f16, q8_0      written directly: gguf-py quantizes Q8_0 in numpy
  q6_k, q5_k, q4_k    llama.cpp's own quantizer (`llama_model_quantize` through llama-cpp-python): the
                      file is first written with an F32 embedding, then llama.cpp rewrites it with
                      `token_embedding_type` set and `pure` on, so every other tensor keeps its type and
                      is copied byte for byte (llama.cpp copies a tensor whose target type is its own)

The default, Q6_K for the TQ types, is what bitnet.cpp recommends for BitNet b1.58 2B4T (perplexity
17.109 -> 17.149) and what llama.cpp's own quantizer picks for a tied embedding; README's export section
has the measured sizes, speeds and perplexities behind it. `--type f16` and `--type f32` keep the
embedding in their own type by default: they are the unquantized references.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import gguf
import numpy as np

from bitjax.export.common import ExportError

Q = gguf.GGMLQuantizationType
EMBEDDING_TYPES = {"f32": Q.F32, "f16": Q.F16, "q8_0": Q.Q8_0, "q6_k": Q.Q6_K, "q5_k": Q.Q5_K, "q4_k": Q.Q4_K}
NUMPY_TYPES = ("f32", "f16", "q8_0")
LLAMA_CPP_TYPES = ("q6_k", "q5_k", "q4_k")
DEFAULT_QUANTIZED = "q6_k"
# The read-back check: F32/F16 must equal the model's embedding cast to the type, bit for bit; a quantized
# embedding must dequantize to the model's within a relative RMS error bound. On a Gaussian embedding the
# types reach Q8_0 0.54%, Q6_K 1.78%, Q5_K 3.61%, Q4_K 7.13%; the bounds are about three times that (a
# trained embedding's heavier tails cost a little more), and still catch any layout or row-order mistake,
# which gives errors near 100% or more.
MAX_RELATIVE_RMS = {"q8_0": 0.016, "q6_k": 0.05, "q5_k": 0.1, "q4_k": 0.2}
# llama.cpp's `llama_ftype` for each ternary type (the ftype its quantizer is told to keep)
LLAMA_FTYPES = {"tq2_0": gguf.LlamaFileType.MOSTLY_TQ2_0, "tq1_0": gguf.LlamaFileType.MOSTLY_TQ1_0,
                "f16": gguf.LlamaFileType.MOSTLY_F16, "f32": gguf.LlamaFileType.ALL_F32}


def default_embedding_type(gguf_type: str) -> str:
    """Q6_K beside the ternary types; the F16/F32 exports keep their own type (they are the references)."""
    return gguf_type if gguf_type in ("f16", "f32") else DEFAULT_QUANTIZED


def check_embedding_type(embedding_type: str, d_model: int) -> None:
    """Raise ExportError for an unknown type or a width the type's blocks do not divide."""
    if embedding_type not in EMBEDDING_TYPES:
        raise ExportError(f"--embedding-type {embedding_type} is not supported; use one of "
                          f"{', '.join(EMBEDDING_TYPES)}")
    block, _ = gguf.GGML_QUANT_SIZES[EMBEDDING_TYPES[embedding_type]]
    if d_model % block:
        raise ExportError(f"--embedding-type {embedding_type} packs rows in blocks of {block} values, but "
                          f"model.d_model = {d_model} is not a multiple; use --embedding-type q8_0 or f16")
    if embedding_type in LLAMA_CPP_TYPES:
        try:
            import llama_cpp  # noqa: F401
        except ImportError:
            raise ExportError(f"--embedding-type {embedding_type} is quantized by llama.cpp, which is not "
                              "installed; pip install 'bitjax[export]', or use --embedding-type q8_0") from None


def staging_type(embedding_type: str) -> str:
    """The type the writer itself stores the embedding in (F32 where llama.cpp quantizes it afterwards)."""
    return embedding_type if embedding_type in NUMPY_TYPES else "f32"


def embedding_bytes(embedding_type: str, shape_VD: tuple[int, int]) -> tuple[tuple[int, int], type, Q | None]:
    """(byte shape, numpy dtype, raw GGML type or None) of a (V, D) embedding stored as `embedding_type`."""
    qtype = EMBEDDING_TYPES[embedding_type]
    if embedding_type in ("f32", "f16"):
        return shape_VD, (np.float32 if embedding_type == "f32" else np.float16), None
    block, type_size = gguf.GGML_QUANT_SIZES[qtype]
    return (shape_VD[0], shape_VD[1] // block * type_size), np.uint8, qtype


def encode_embedding(embedding_VD: np.ndarray, embedding_type: str) -> np.ndarray:
    """The embedding in one of the types the writer stores itself (f32, f16, q8_0)."""
    if embedding_type == "f32":
        return embedding_VD.astype(np.float32)
    if embedding_type == "f16":
        return embedding_VD.astype(np.float16)
    if embedding_type == "q8_0":
        return gguf.quants.quantize(embedding_VD.astype(np.float32), Q.Q8_0)
    raise ValueError(f"{embedding_type} is quantized by llama.cpp, not by the writer")


def quantize_embedding_with_llama_cpp(src: Path, dst: Path, gguf_type: str, embedding_type: str,
                                      n_threads: int = 0, untied_head: bool = False) -> None:
    """Rewrite GGUF `src` as `dst` with token_embd (and an untied head, `output.weight`) in `embedding_type`,
    every other tensor copied unchanged."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = int(LLAMA_FTYPES[gguf_type])
    params.token_embedding_type = int(EMBEDDING_TYPES[embedding_type])
    if untied_head:
        params.output_tensor_type = int(EMBEDDING_TYPES[embedding_type])
    params.pure = True              # no per-tensor type mixing: ternary tensors keep their type (copied)
    params.allow_requantize = False  # nothing quantized may be quantized again
    params.nthread = n_threads
    llama_cpp.llama_backend_init()
    with _quiet_stderr():  # llama.cpp logs one line per tensor
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0:
        raise ExportError(f"llama.cpp could not quantize the embedding of {src} to {embedding_type} "
                          f"(llama_model_quantize returned {rc}); try --embedding-type q8_0")


class _quiet_stderr:
    """Redirect file descriptor 2 to /dev/null for a C library's logging; restored on exit."""

    def __enter__(self):
        import os
        import sys

        sys.stderr.flush()
        self._saved = os.dup(2)
        self._null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(self._null, 2)

    def __exit__(self, *exc):
        import os

        os.dup2(self._saved, 2)
        os.close(self._saved)
        os.close(self._null)
        return False


def relative_rms_error(stored: np.ndarray, expected_VD: np.ndarray) -> float:
    diff = stored.astype(np.float64) - expected_VD.astype(np.float64)
    return float(np.sqrt(np.mean(diff ** 2) / max(np.mean(expected_VD.astype(np.float64) ** 2), 1e-30)))


def verify_embedding(path: Path, reader: gguf.GGUFReader, expected_VD: np.ndarray, embedding_type: str,
                     name: str = "token_embd.weight") -> None:
    """The embedding (or an untied head, `name`) is stored in `embedding_type` and dequantizes to the model's
    within the type's bound."""
    tensor = next((t for t in reader.tensors if t.name == name), None)
    if tensor is None:
        raise ExportError(f"{path}: {name} missing on read-back")
    if tensor.tensor_type != EMBEDDING_TYPES[embedding_type]:
        raise ExportError(f"{path}: {name} reads back as {tensor.tensor_type.name}, not {embedding_type}")
    if embedding_type in ("f32", "f16"):
        if not np.array_equal(np.asarray(tensor.data).reshape(expected_VD.shape),
                              encode_embedding(expected_VD, embedding_type)):
            raise ExportError(f"{path}: {name} ({embedding_type}) reads back different")
        return
    stored = gguf.quants.dequantize(tensor.data, tensor.tensor_type).reshape(expected_VD.shape)
    error = relative_rms_error(stored, expected_VD)
    if error > MAX_RELATIVE_RMS[embedding_type] * (1 + 1e-6):
        raise ExportError(f"{path}: {name} ({embedding_type}) reads back with relative RMS error "
                          f"{error:.2e}, above the {MAX_RELATIVE_RMS[embedding_type]:.0e} this type reaches")
