"""Input-pipeline throughput on one CPU core, against what training consumes.

Measures tokens/s of the full training stream (two pre-tokenized sources mixed 60/40 by Grain, packed into
1024-token sequences, batched) with the process pinned to one core, then the tokens/s a train step of the
tiny recipe (and, with --model-125m, the bitnet_125m preset) consumes on this machine, and prints the ratios.

    python -m benchmarks.pipeline [--batches 200] [--packing concat_then_split] [--model-125m]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def pipeline_tokens_per_sec(cfg_data, batches: int) -> tuple[float, float]:
    from bitjax.data import build_pipeline

    pipeline = build_pipeline(cfg_data)   # tokenizes once and caches the token shards (not timed)
    it = pipeline.train_iterator()
    for _ in range(10):
        next(it)
    tokens = real = 0
    t0 = time.perf_counter()
    for _ in range(batches):
        batch = next(it)
        pipeline.token_counts(batch)
        tokens += batch["inputs"].size
        real += int(np.sum(batch["segment_ids"] > 0))
    dt = time.perf_counter() - t0
    return tokens / dt, real / tokens


def train_tokens_per_sec(cfg, steps: int) -> float:
    import jax

    from benchmarks.step_time import synthetic_batch
    from bitjax.train import Trainer

    trainer = Trainer.create(cfg)
    state = trainer.init_state()
    step = trainer.jit_train_step()
    batch = synthetic_batch(cfg)
    state, m = step(state, batch)
    jax.block_until_ready(m)
    t0 = time.perf_counter()
    for _ in range(steps):
        state, m = step(state, batch)
    jax.block_until_ready(m)
    return cfg.data.batch_size * cfg.data.seq_len * steps / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=200, help="batches of 8 x 1024 tokens to time")
    parser.add_argument("--packing", default="concat_then_split", choices=["concat_then_split", "first_fit"])
    parser.add_argument("--train-steps", type=int, default=5)
    parser.add_argument("--model-125m", action="store_true", help="also time a bitnet_125m step (slow on CPU)")
    args = parser.parse_args()

    from bitjax.config_io import load_recipe
    from bitjax.model import ModelConfig

    tiny = load_recipe(ROOT / "recipes" / "tiny.py")
    data_1024 = dataclasses.replace(tiny.data, seq_len=1024, batch_size=8, packing=args.packing)
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})   # one core for the pipeline
    pipe_tps, fill = pipeline_tokens_per_sec(data_1024, args.batches)
    print(f"pipeline ({args.packing}, mixed natural 0.6 / rephrased 0.4, 8 x 1024 tokens, 1 core): "
          f"{pipe_tps:,.0f} tokens/s ({fill:.1%} non-padding)")
    os.sched_setaffinity(0, set(range(os.cpu_count())))           # the train step gets every core

    runs = [("tiny recipe (8 x 128)", tiny)]
    if args.model_125m:
        cfg = dataclasses.replace(tiny, model=ModelConfig.bitnet_125m(),
                                  data=dataclasses.replace(tiny.data, seq_len=1024, batch_size=1))
        runs.append(("bitnet_125m (1 x 1024)", cfg))
    for name, cfg in runs:
        tps = train_tokens_per_sec(cfg, args.train_steps)
        print(f"training consumption, {name}, all cores: {tps:,.0f} tokens/s -> pipeline/consumption = "
              f"{pipe_tps / tps:,.1f}x")


if __name__ == "__main__":
    main()
