"""Export file sizes and llama.cpp CPU decode speed, TQ2_0 against F16.

    python benchmarks/export.py [--rounds 3] [--decode-tokens 32] [--threads 2]

1. File sizes of --type tq1_0, tq2_0 and f16 for the tiny recipe's shape and for the bitnet_2b4t shape.
   Tiny files are written and measured. For 2b4t the GGUF header, metadata and tensor table are written for
   real and the tensor data size comes from the writer's own plan (GGUF's layout is deterministic: every
   tensor is padded to 32 bytes); the same computation is checked against the written tiny files first.
2. Decode tokens/s in llama.cpp (llama-cpp-python) for the bitnet_700m shape with random ternary weights,
   the same weights as TQ2_0 and as F16, loaded side by side and timed in alternating rounds (medians).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import gguf
import numpy as np

from bitjax import tokenizer as tokenizer_lib
from bitjax.export.gguf_tokenizer import add_tokenizer, read_vocab
from bitjax.export.gguf_writer import ARCH_NAME, add_hyperparameters, plan_tensors, write_gguf
from bitjax.export.model_source import TernaryModel, TernaryTensor, norm_names, ternary_names
from bitjax.model import ModelConfig

TYPES = ("tq1_0", "tq2_0", "f16")


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


def planned_size(model: TernaryModel, gguf_type: str, scratch: Path) -> tuple[int, int]:
    """(file bytes, token_embd bytes) of the GGUF write_gguf would write, from its header and tensor plan."""
    plan = plan_tensors(model, gguf_type)
    writer = gguf.GGUFWriter(scratch / "header.gguf", ARCH_NAME)
    add_hyperparameters(writer, model, gguf_type)
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


def sizes(scratch: Path, tokenizer_path: Path) -> None:
    tiny = ModelConfig.tiny(vocab_size=2048, ffn_activation="silu")  # recipes/tiny.py's shape
    model = random_model(tiny, tokenizer_path, materialize=True)
    print("| model | type | file MB | token_embd MB | non-embedding MB |\n|---|---|---|---|---|")
    for gguf_type in TYPES:
        path = write_gguf(model, scratch / f"tiny-{gguf_type}.gguf", gguf_type)
        planned, embed = planned_size(model, gguf_type, scratch)
        actual = path.stat().st_size
        if planned != actual:
            raise AssertionError(f"planned size {planned} != written size {actual} for tiny {gguf_type}")
        print(f"| tiny (written) | {gguf_type} | {actual / 1e6:.3f} | {embed / 1e6:.3f} "
              f"| {(actual - embed) / 1e6:.3f} |")
        path.unlink()
    big = ModelConfig.bitnet_2b4t(ffn_activation="silu")
    shape_only = random_model(big, tokenizer_path, materialize=False)
    for gguf_type in TYPES:
        planned, embed = planned_size(shape_only, gguf_type, scratch)
        print(f"| bitnet_2b4t (planned) | {gguf_type} | {planned / 1e6:.1f} | {embed / 1e6:.1f} | "
              f"{(planned - embed) / 1e6:.1f} ({(planned - embed) / 1e9:.3f} GB) |")


def decode_speed(scratch: Path, tokenizer_path: Path, rounds: int, n_decode: int, threads: int) -> None:
    from llama_cpp import Llama

    cfg = ModelConfig.bitnet_700m(ffn_activation="silu")
    model = random_model(cfg, tokenizer_path, materialize=True, seed=1)
    paths = {}
    for gguf_type in ("tq2_0", "f16"):
        t0 = time.perf_counter()
        paths[gguf_type] = write_gguf(model, scratch / f"700m-{gguf_type}.gguf", gguf_type)
        print(f"wrote 700m {gguf_type}: {paths[gguf_type].stat().st_size / 1e6:.1f} MB "
              f"in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    del model
    llms = {t: Llama(model_path=str(p), n_ctx=256, n_threads=threads, n_threads_batch=threads, verbose=False)
            for t, p in paths.items()}
    prompt = list(range(100, 108))
    speeds = {t: [] for t in llms}
    for llm in llms.values():  # warm-up: page the weights in
        llm.reset()
        llm.eval(prompt + [200, 201])
    for _ in range(rounds):
        for gguf_type, llm in llms.items():
            llm.reset()
            llm.eval(prompt)
            start = time.perf_counter()
            for i in range(n_decode):
                llm.eval([300 + i])
            speeds[gguf_type].append(n_decode / (time.perf_counter() - start))
    for llm in llms.values():
        llm.close()
    med = {t: statistics.median(v) for t, v in speeds.items()}
    print(f"\nllama.cpp decode, bitnet_700m shape (random weights), {threads} threads, {n_decode} tokens after an "
          f"8-token prompt, median of {rounds} alternating rounds:")
    print("| type | file MB | decode tokens/s (median) | rounds |\n|---|---|---|---|")
    for t in llms:
        print(f"| {t} | {paths[t].stat().st_size / 1e6:.1f} | {med[t]:.2f} | "
              f"{', '.join(f'{s:.2f}' for s in speeds[t])} |")
    print(f"tq2_0 / f16 decode speed: {med['tq2_0'] / med['f16']:.2f}x (target: at least 2x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--decode-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-decode", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bitjax-export-bench-") as tmp:
        scratch = Path(tmp)
        tokenizer_path = make_tokenizer(scratch)
        sizes(scratch, tokenizer_path)
        if not args.skip_decode:
            decode_speed(scratch, tokenizer_path, args.rounds, args.decode_tokens, args.threads)


if __name__ == "__main__":
    main()
