"""Distillation costs: cache bytes per token against full-vocabulary fp16, and the KD step-time overhead.

The KD step (student logits against a cached top-k teacher, tail bucket, forward KL, plus CE) is timed
against the CE-only step of the same model and batch (the recipe's text sources with objective "ce"),
compiled first, in alternating rounds; the figure is the median of per-round ratios.

    python -m benchmarks.distill [--recipe recipes/distill_tiny.py] [--k 32] [--rounds 7]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import jax
import numpy as np

from benchmarks.step_time import synthetic_batch
from bitjax.config import apply_overrides, load_recipe
from bitjax.data.teacher_files.topk_cache import CacheSpec
from bitjax.training.trainer import Trainer


def storage_table(ks=(8, 32, 64), vocabs=(2048, 49152, 128256)):
    print("cache storage per token (teacher top-k ids + log-probs (fp16) + tail), against the full "
          "vocabulary in fp16:")
    for vocab in vocabs:
        full = 2 * vocab
        row = "  ".join(
            f"k={k}: {CacheSpec('x', 'x', vocab, k, 1).bytes_per_token():4d} B "
            f"({full / CacheSpec('x', 'x', vocab, k, 1).bytes_per_token():6.0f}x smaller)"
            for k in ks)
        print(f"  vocab {vocab:6d} (full {full:6d} B)  {row}")


def kd_batch(cfg, k: int) -> dict:
    rng = np.random.default_rng(1)
    batch = synthetic_batch(cfg)
    shape = batch["inputs"].shape
    logits = rng.normal(size=shape + (cfg.model.vocab_size,)).astype(np.float32)
    ids = np.argsort(-logits, axis=-1)[..., :k].astype(np.int32)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    top = np.take_along_axis(logp, ids, -1)
    tail = np.log1p(-np.exp(top).sum(-1)).astype(np.float32)
    return {**batch, "teacher_ids": ids, "teacher_logprobs": top.astype(np.float32), "teacher_tail": tail}


def with_objective(cfg, objective: str):
    """The recipe's text sources only (traces dropped), all with one objective."""
    text = tuple(dataclasses.replace(src, objective=objective) for src in cfg.data.sources
                 if not src.uri.startswith("traces:"))
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, sources=text))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="recipes/distill_tiny.py")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--steps-per-round", type=int, default=5)
    args = ap.parse_args()

    storage_table()
    cfg = apply_overrides(load_recipe(args.recipe), args.overrides)
    runs = {}
    for name, objective in (("ce", "ce"), ("kd", "kd")):
        run_cfg = with_objective(cfg, objective)
        trainer = Trainer.create(run_cfg)
        batch = kd_batch(run_cfg, args.k) if objective == "kd" else synthetic_batch(run_cfg)
        step = trainer.jit_train_step()
        state, m = step(trainer.init_state(), batch)     # compile
        jax.block_until_ready(m)
        runs[name] = [step, state, batch]
    times, ratios = {n: [] for n in runs}, []
    for _ in range(args.rounds):
        dt = {}
        for name, run in runs.items():
            step, state, batch = run
            t0 = time.perf_counter()
            for _ in range(args.steps_per_round):
                state, m = step(state, batch)
            jax.block_until_ready(m)
            run[1] = state
            dt[name] = (time.perf_counter() - t0) / args.steps_per_round
            times[name].append(dt[name])
        ratios.append(dt["kd"] / dt["ce"])
    print(f"\nrecipe {args.recipe}  batch {cfg.data.batch_size}x{cfg.data.seq_len}  vocab {cfg.model.vocab_size}  "
          f"k={args.k}  backend={jax.default_backend()}")
    for name in runs:
        print(f"  {name:<3} step median {statistics.median(times[name]) * 1e3:8.1f} ms")
    print(f"  KD/CE step-time ratio: median {statistics.median(ratios):.3f} over {args.rounds} rounds "
          f"(min {min(ratios):.3f}, max {max(ratios):.3f})")


if __name__ == "__main__":
    main()
