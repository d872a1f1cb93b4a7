"""What going on past a teacher cache costs the host (on_cache_exhausted="ce"): packing the source's stream.

After its cached records, data shard j of S reads sequences n + j, n + j + S, ... of the source's stream
(bitjax.data.teacher_files.cache_stream): its first text row passes over the n cached sequences once (packed again, no
teacher), and each later row over the S - 1 rows the other shards read. Both are packing on the training
loop's thread. Prints, per "kd" source of a recipe, the packed tokens/s of its stream (median over repeats),
and at that rate the one-time switch (the planned cache: its share of distill.cache_examples) and the packing
a step then costs each shard (the source's share of the global batch).

    python -m benchmarks.cache_switch [--recipe recipes/bitnet_125m.py] [--sequences 200] [--repeats 3]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def packed_tokens_per_sec(pipeline, name: str, sequences: int, repeats: int) -> float:
    rates = []
    for _ in range(repeats):
        stream = pipeline.source_examples(name)
        next(stream)   # builds the stream (not timed)
        t0 = time.perf_counter()
        for _ in itertools.islice(stream, sequences):
            pass
        rates.append(sequences * pipeline.cfg.seq_len / (time.perf_counter() - t0))
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default=str(ROOT / "recipes" / "bitnet_125m.py"))
    parser.add_argument("--sequences", type=int, default=200, help="packed sequences timed per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()

    from bitjax.config import apply_overrides, load_recipe
    from bitjax.data import build_pipeline
    from bitjax.data.coverage import cache_examples_per_source

    cfg = apply_overrides(load_recipe(args.recipe), args.overrides)
    pipeline = build_pipeline(cfg.data, text_only=True)
    shares = cache_examples_per_source(cfg, cfg.distill.cache_examples)
    print(f"{Path(args.recipe).stem}: sequences of {cfg.data.seq_len}, global batch {cfg.data.batch_size}, "
          f"median of {args.repeats} x {args.sequences} sequences")
    for name, cached in shares.items():
        shard = pipeline.sources[name].train
        rate = packed_tokens_per_sec(pipeline, name, args.sequences, args.repeats)
        per_step = pipeline.weights[name] * cfg.data.batch_size * cfg.data.seq_len / rate
        print(f"  {name:<12} mean document {shard.n_tokens / len(shard):,.0f} tokens: packed {rate:,.0f} tokens/s; "
              f"switch after {cached:,} cached sequences {cached * cfg.data.seq_len / rate:,.1f} s once, "
              f"then {per_step * 1e3:,.1f} ms of packing per step")


if __name__ == "__main__":
    main()
