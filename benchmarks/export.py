"""GGUF file sizes per ternary type and embedding type, and llama.cpp CPU decode speed at the 700m shape.

    python -m benchmarks.export [--rounds 9] [--decode-tokens 16] [--threads 2]
    python -m benchmarks.export --smoke          # tiny shapes, one round: checks the script end to end

1. Sizes of --type tq1_0 / tq2_0 / f16 with every --embedding-type, at the bitnet_700m and bitnet_2b4t
   shapes. The GGUF header, metadata and tensor table are written for real and the tensor data size comes
   from the writer's own plan (GGUF's layout is deterministic: every tensor is padded to 32 bytes); the same
   computation is first checked byte-exact against files written at the tiny shape, for every combination.
2. Decode tokens/s in llama.cpp (llama-cpp-python) at the bitnet_700m shape with random ternary weights, for
   F16 (ternary codes and embedding in F16), TQ2_0 + F16 embedding, TQ2_0 + the default embedding and
   TQ1_0 + the default embedding: the same weights, loaded side by side and timed in alternating rounds
   (medians). Each is also given as a bandwidth-bound fraction: the bytes a decoded token reads (every
   weight once; the tied head reads the whole embedding) times tokens/s, over the read bandwidth measured
   in the same run by a memory-bound matrix-vector product. 1.0 means decoding runs at memory speed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import gguf
import numpy as np

from bitjax import tokenizer as tokenizer_lib
from bitjax.export.embedding_quant import DEFAULT_QUANTIZED
from bitjax.export.gguf_tokenizer import add_tokenizer, read_vocab
from bitjax.export.gguf_writer import ARCH_NAME, add_hyperparameters, plan_tensors, write_gguf
from bitjax.export.model_source import TernaryModel, TernaryTensor, norm_names, ternary_names
from bitjax.nn.model_config import ModelConfig

TYPES = ("tq1_0", "tq2_0", "f16")
EMBEDDINGS = ("f16", "q8_0", "q6_k", "q5_k", "q4_k")
# (label, --type, --embedding-type) of the decode comparison
DECODE_FILES = (("F16", "f16", "f16"), ("TQ2_0 + F16 emb", "tq2_0", "f16"),
                (f"TQ2_0 + {DEFAULT_QUANTIZED.upper()} emb", "tq2_0", DEFAULT_QUANTIZED),
                (f"TQ1_0 + {DEFAULT_QUANTIZED.upper()} emb", "tq1_0", DEFAULT_QUANTIZED),
                ("TQ2_0 + Q8_0 emb", "tq2_0", "q8_0"),   # the cheapest quantized dot product, for comparison
                ("TQ2_0 + Q4_K emb", "tq2_0", "q4_k"))   # the smallest K-quant head, for comparison


def make_tokenizer(directory: Path) -> Path:
    """A small byte-level BPE (the benchmark's models are random; the tokenizer only fills the metadata)."""
    texts = [f"the quick brown fox {i} jumps over the lazy dog, said the {i}th voice." for i in range(200)]
    path = directory / "tokenizer.json"
    tokenizer_lib.save_atomic(tokenizer_lib.train_bpe(texts, 512), path)
    return path


def _projection_shapes(cfg: ModelConfig, name: str) -> tuple[int, int]:
    q, kv = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
    return {"q_proj": (q, cfg.d_model), "k_proj": (kv, cfg.d_model), "v_proj": (kv, cfg.d_model),
            "o_proj": (cfg.d_model, q), "gate_proj": (cfg.d_ff, cfg.d_model), "up_proj": (cfg.d_ff, cfg.d_model),
            "down_proj": (cfg.d_model, cfg.d_ff)}[name.rsplit(".", 1)[1]]


def random_model(cfg: ModelConfig, tokenizer_path: Path, *, materialize: bool, seed: int = 0) -> TernaryModel:
    """Random ternary codes (uniform over {-1, 0, 1}) and scales; `materialize=False` gives shape-only arrays."""
    rng = np.random.default_rng(seed)

    def codes(shape):
        return rng.integers(-1, 2, size=shape, dtype=np.int8) if materialize else np.broadcast_to(np.int8(0), shape)

    ternary = {n: TernaryTensor(codes(_projection_shapes(cfg, n)), np.float32(rng.uniform(0.01, 0.05)))
               for n in ternary_names(cfg)}
    embed_shape = (cfg.vocab_size, cfg.d_model)
    embedding = (rng.standard_normal(embed_shape, dtype=np.float32) * 0.02 if materialize
                 else np.broadcast_to(np.float32(0), embed_shape))
    dense = {"embed_tokens": embedding}
    for name in norm_names(cfg):
        width = cfg.d_ff if name.endswith("ffn_sub_norm") else cfg.d_model
        dense[name] = np.ones((width,), np.float32)
    return TernaryModel(cfg, dense, ternary, tokenizer_path=tokenizer_path, step=0, name="random")


def planned_size(model: TernaryModel, gguf_type: str, embedding_type: str, scratch: Path) -> tuple[int, int]:
    """(file bytes, token_embd bytes) of the GGUF write_gguf would write, from its header and tensor plan."""
    plan = plan_tensors(model, gguf_type, embedding_type)
    writer = gguf.GGUFWriter(scratch / "header.gguf", ARCH_NAME)
    add_hyperparameters(writer, model, gguf_type, embedding_type)
    add_tokenizer(writer, read_vocab(model.tokenizer_path, model.config.vocab_size))
    for t in plan:
        writer.add_tensor_info(t.name, t.byte_shape, np.dtype(t.np_dtype), t.nbytes, raw_dtype=t.raw_dtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    header = writer.fout[0].tell()
    writer.close()
    align = gguf.GGUF_DEFAULT_ALIGNMENT
    pad = lambda n: -(-n // align) * align  # noqa: E731
    return pad(header) + sum(pad(t.nbytes) for t in plan), plan[0].nbytes


def check_planned_sizes(scratch: Path, tokenizer_path: Path) -> None:
    """The planned size equals the written file's, for every type and embedding type, at the tiny shape."""
    model = random_model(ModelConfig.tiny(vocab_size=2048, ffn_activation="silu"), tokenizer_path, materialize=True)
    for gguf_type in TYPES:
        for embedding_type in EMBEDDINGS:
            path = write_gguf(model, scratch / "check.gguf", gguf_type, embedding_type=embedding_type, force=True)
            planned, _ = planned_size(model, gguf_type, embedding_type, scratch)
            if planned != os.path.getsize(str(path)):
                raise AssertionError(f"tiny {gguf_type} + {embedding_type}: planned {planned} bytes, "
                                     f"written {os.path.getsize(str(path))}")
            path.unlink()
    print(f"planned sizes equal written sizes for {len(TYPES) * len(EMBEDDINGS)} tiny files", file=sys.stderr)


def sizes(scratch: Path, tokenizer_path: Path, shapes: dict[str, ModelConfig]) -> None:
    print("| shape | ternary type | " + " | ".join(f"{e.upper()} embedding" for e in EMBEDDINGS) + " |")
    print("|---|---|" + "---|" * len(EMBEDDINGS))
    for label, cfg in shapes.items():
        model = random_model(cfg, tokenizer_path, materialize=False)
        for gguf_type in TYPES:
            cells = []
            for embedding_type in EMBEDDINGS:
                total, embed = planned_size(model, gguf_type, embedding_type, scratch)
                cells.append(f"{total / 1e6:,.1f} MB (emb {embed / 1e6:,.1f})")
            print(f"| {label} | {gguf_type} | " + " | ".join(cells) + " |")


def read_bandwidth(n_bytes: int = 512 << 20, repeats: int = 5) -> float:
    """Bytes/s of a float32 matrix-vector product (BLAS, all threads): the read speed a decode step can reach."""
    rows = 4096
    matrix = np.random.default_rng(0).standard_normal((n_bytes // 4 // rows, rows), dtype=np.float32)
    vector = np.ones(rows, np.float32)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        matrix @ vector
        best = min(best, time.perf_counter() - start)
    return matrix.nbytes / best


def tensor_bytes(path: Path) -> int:
    """Bytes of all tensor data: what one decoded token reads (each weight once, the tied head in full)."""
    return sum(int(t.n_bytes) for t in gguf.GGUFReader(path).tensors)


def decode_speed(scratch: Path, tokenizer_path: Path, cfg: ModelConfig, label: str, rounds: int, n_decode: int,
                 threads: int) -> None:
    from llama_cpp import Llama

    model = random_model(cfg, tokenizer_path, materialize=True, seed=1)
    paths = {}
    for name, gguf_type, embedding_type in DECODE_FILES:
        t0 = time.perf_counter()
        paths[name] = write_gguf(model, scratch / f"decode-{gguf_type}-{embedding_type}.gguf", gguf_type,
                                 embedding_type=embedding_type)
        size_mb = os.path.getsize(str(paths[name])) / 1e6
        print(f"wrote {label} {name}: {size_mb:.1f} MB in {time.perf_counter() - t0:.0f} s",
              file=sys.stderr)
    del model
    bandwidth = read_bandwidth(64 << 20 if cfg.d_model < 1024 else 512 << 20)
    llms = {n: Llama(model_path=str(p), n_ctx=64, n_threads=threads, n_threads_batch=threads, verbose=False)
            for n, p in paths.items()}
    prompt = list(range(100, 108))
    speeds = {n: [] for n in llms}
    for llm in llms.values():  # warm-up: page the weights in
        llm.reset()
        llm.eval(prompt + [200, 201])
    for _ in range(rounds):
        for name, llm in llms.items():
            llm.reset()
            llm.eval(prompt)
            start = time.perf_counter()
            for i in range(n_decode):
                llm.eval([300 + i])
            speeds[name].append(n_decode / (time.perf_counter() - start))
    for llm in llms.values():
        llm.close()
    med = {n: statistics.median(v) for n, v in speeds.items()}
    base = "F16"
    print(f"\nllama.cpp decode, {label} shape (random weights), {threads} threads, {n_decode} tokens after an "
          f"8-token prompt, median of {rounds} alternating rounds; read bandwidth {bandwidth / 1e9:.1f} GB/s "
          "(float32 matrix-vector product, same run):")
    print("| file | MB | bytes read per token | decode tokens/s (median) | vs F16 (median of per-round ratios) "
          "| bandwidth-bound fraction | rounds |\n|---|---|---|---|---|---|---|")
    for name, path in paths.items():
        per_token = tensor_bytes(path)
        ratios = [s / f for s, f in zip(speeds[name], speeds[base])]
        print(f"| {name} | {os.path.getsize(str(path)) / 1e6:.1f} | {per_token / 1e6:.1f} MB | {med[name]:.2f} | "
              f"{med[name] / med[base]:.2f}x ({statistics.median(ratios):.2f}x) | "
              f"{med[name] * per_token / bandwidth:.2f} | {', '.join(f'{s:.2f}' for s in speeds[name])} |")
    default = DECODE_FILES[2][0]
    print(f"{default} / F16 decode speed: {med[default] / med[base]:.2f}x (target: at least 3.0x)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--decode-tokens", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-decode", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes, one round (checks the script runs)")
    args = parser.parse_args(argv)
    tiny = ModelConfig.tiny(vocab_size=2048, ffn_activation="silu")
    with tempfile.TemporaryDirectory(prefix="bitjax-export-bench-") as tmp:
        scratch = Path(tmp)
        tokenizer_path = make_tokenizer(scratch)
        check_planned_sizes(scratch, tokenizer_path)
        shapes = ({"tiny": tiny} if args.smoke else
                  {"bitnet_700m": ModelConfig.bitnet_700m(ffn_activation="silu"),
                   "bitnet_2b4t": ModelConfig.bitnet_2b4t(ffn_activation="silu")})
        sizes(scratch, tokenizer_path, shapes)
        if not args.skip_decode:
            if args.smoke:
                decode_speed(scratch, tokenizer_path, tiny, "tiny", 1, 4, args.threads)
            else:
                decode_speed(scratch, tokenizer_path, ModelConfig.bitnet_700m(ffn_activation="silu"), "bitnet_700m",
                             args.rounds, args.decode_tokens, args.threads)


if __name__ == "__main__":
    main()
