"""Held-out perplexity in llama.cpp of a trained run exported with each --embedding-type, against F16.

    python -m benchmarks.embedding_quality RUN_DIR [--type tq2_0] [--tokens 4096] [--threads 2]

Every file holds the same ternary codes; only the tied embedding / LM head differs. All are scored on the
same held-out tokens (the run's held-out split, tokenized as in training), in windows of the run's training
sequence length, each window evaluated from an empty context. bitjax's own training forward (A8, float32
embedding) is printed as the reference.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import gguf
import numpy as np

from bitjax.export import llama_check
from bitjax.export import reference as ref
from bitjax.export.embedding_quant import DEFAULT_QUANTIZED, EMBEDDING_TYPES
from bitjax.export.gguf_writer import write_gguf
from bitjax.export.model_source import TernaryModel, load_run


def windowed_nll(logits_fn, tokens: np.ndarray, window: int) -> tuple[float, int]:
    """Summed next-token negative log-likelihood and count over consecutive windows of `tokens`."""
    total, count = 0.0, 0
    for start in range(0, len(tokens) - 1, window):
        chunk = tokens[start:start + window]
        if len(chunk) < 2:
            break
        logits = logits_fn(chunk)
        total += (len(chunk) - 1) * np.log(ref.perplexity(logits, chunk))
        count += len(chunk) - 1
    return total, count


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--type", default="tq2_0", choices=["tq2_0", "tq1_0"])
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    run = load_run(args.run_dir)
    model = TernaryModel.from_run(run)
    window = run.config.data.seq_len
    tokens = ref.heldout_tokens(run, args.tokens)
    nll, n = windowed_nll(lambda t: ref.bitjax_logits(run, t), tokens, window)
    print(f"{run.config.name} at step {run.step}: {n} held-out tokens in windows of {window}; "
          f"bitjax training forward (A8, float32 embedding): perplexity {np.exp(nll / n):.3f}")
    print(f"| --type {args.type} + embedding | file MB | embedding MB | llama.cpp perplexity | vs F16 embedding |")
    print("|---|---|---|---|---|")
    baseline = None
    with tempfile.TemporaryDirectory(prefix="bitjax-embedding-quality-") as tmp:
        for embedding_type in [e for e in EMBEDDING_TYPES if e != "f32"]:
            path = write_gguf(model, Path(tmp) / f"{embedding_type}.gguf", args.type, embedding_type=embedding_type)
            llm = llama_check.open_model(path, n_ctx=window + 8, n_threads=args.threads)
            try:
                nll, n = windowed_nll(lambda t, llm=llm: llama_check.llama_logits(llm, t), tokens, window)
            finally:
                llm.close()
            ppl = float(np.exp(nll / n))
            baseline = baseline or ppl  # f16 comes first
            embed_mb = next(t.n_bytes for t in gguf.GGUFReader(path).tensors
                            if t.name == "token_embd.weight") / 1e6
            mark = " (default)" if embedding_type == DEFAULT_QUANTIZED else ""
            print(f"| {embedding_type}{mark} | {os.path.getsize(str(path)) / 1e6:.2f} | {embed_mb:.2f} | {ppl:.3f} | "
                  f"{(ppl - baseline) / baseline:+.3%} |")
            path.unlink()


if __name__ == "__main__":
    main()
