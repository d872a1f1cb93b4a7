"""Train-step time of the ternary model against the same model with quant="none", side by side.

Both steps are built from the same recipe and shapes, compiled first, then timed in alternating
rounds (so machine noise hits both alike); the figure is the median over rounds.

    python -m benchmarks.step_time [--recipe recipes/tiny.py] [--rounds 7] [--steps-per-round 5]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import jax
import numpy as np

from bitjax.config_io import apply_overrides, load_recipe
from bitjax.train import Trainer


def synthetic_batch(cfg, teacher_k: int = 0) -> dict:
    """Random tokens, one source; with `teacher_k` also random teacher top-k fields (recipes that distil)."""
    rng = np.random.default_rng(0)
    shape = (cfg.data.batch_size, cfg.data.seq_len)
    tokens = rng.integers(0, cfg.model.vocab_size, size=(shape[0], shape[1] + 1), dtype=np.int32)
    batch = {
        "inputs": tokens[:, :-1], "targets": tokens[:, 1:],
        "segment_ids": np.ones(shape, np.int32),
        "positions": np.broadcast_to(np.arange(shape[1], dtype=np.int32), shape).copy(),
        "loss_mask": np.ones(shape, np.int32),
        "source_id": np.zeros(shape[:1], np.int32),
    }
    if teacher_k:
        logp = np.sort(np.log(rng.dirichlet(np.ones(teacher_k + 1), size=shape)), -1)[..., ::-1]
        batch.update(teacher_ids=rng.integers(0, cfg.model.vocab_size, size=(*shape, teacher_k), dtype=np.int32),
                     teacher_logprobs=logp[..., :teacher_k].astype(np.float32),
                     teacher_tail=logp[..., teacher_k].astype(np.float32))
    return batch


def build(cfg):
    trainer = Trainer.create(cfg)
    step = trainer.jit_train_step()
    state = trainer.init_state()
    batch = synthetic_batch(cfg, cfg.distill.k if trainer.objectives.needs_teacher() else 0)
    state, m = step(state, batch)  # compile
    jax.block_until_ready(m)
    return step, state, batch


def time_steps(step, state, batch, n: int):
    t0 = time.perf_counter()
    for _ in range(n):
        state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    return state, (time.perf_counter() - t0) / n


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="recipes/tiny.py")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--steps-per-round", type=int, default=5)
    args = ap.parse_args()

    cfg = apply_overrides(load_recipe(args.recipe), args.overrides)
    runs = {
        "ternary": build(cfg),
        "none": build(dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, quant="none"))),
    }
    times = {k: [] for k in runs}
    ratios = []
    for _ in range(args.rounds):
        round_times = {}
        for name, (step, state, batch) in runs.items():
            state, dt = time_steps(step, state, batch, args.steps_per_round)
            runs[name] = (step, state, batch)
            times[name].append(dt)
            round_times[name] = dt
        ratios.append(round_times["ternary"] / round_times["none"])
    tokens = cfg.data.batch_size * cfg.data.seq_len
    print(f"recipe {args.recipe}  model d={cfg.model.d_model} layers={cfg.model.n_layers} "
          f"batch={cfg.data.batch_size}x{cfg.data.seq_len}  backend={jax.default_backend()} "
          f"devices={jax.device_count()}")
    for name in runs:
        med = statistics.median(times[name])
        print(f"  quant={name:<8} median step {med * 1e3:8.1f} ms   {tokens / med:10.0f} tokens/s")
    print(f"  ratio ternary/none: median {statistics.median(ratios):.3f} over {args.rounds} rounds "
          f"(min {min(ratios):.3f}, max {max(ratios):.3f})")


if __name__ == "__main__":
    main()
