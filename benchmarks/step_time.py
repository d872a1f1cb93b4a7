"""Train-step time, side by side in one process: the step against its reference paths, KD against CE, and
ternary against full precision.

Every variant is built from the same recipe and shapes and compiled first, then timed in alternating rounds
(so machine noise hits them alike); figures are medians over rounds, ratios are taken within each round.

    python -m benchmarks.step_time [--recipe recipes/distill_tiny.py] [--rounds 7] [--steps-per-round 5]
    python -m benchmarks.step_time --compare quant --recipe recipes/tiny.py

--compare paths (default): "reference" is the step with the plain paths (REFERENCE below: XLA attention, the
head and loss in one block, the fake-quantized BitLinear, the layers unrolled), "default" the recipe as it
runs; "ce" is the default step with every source's objective set to cross-entropy on the same batch
(teacher fields included), so default/ce is what distillation costs. --compare quant: ternary against quant="none".
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import jax

from bitjax.config import apply_overrides, load_recipe
from bitjax.fit_check import bench
from bitjax.training.trainer import Trainer

# The plain paths the accelerator-grade step replaced, as `--set` overrides.
REFERENCE = ["model.attention=xla", "loss_chunk=1000000", "model.int8_matmul=false", "model.scan_layers=false"]


def synthetic_batch(cfg, teacher_k: int = 0) -> dict:
    """A batch of the recipe's shapes (bitjax bench's: random tokens, every row from source 0, the teacher's
    top-k fields when a source distils)."""
    return bench.synthetic_batch(Trainer.create(cfg), teacher_k or None)


def build(cfg, batch):
    trainer = Trainer.create(cfg)
    step = trainer.jit_train_step()
    state = trainer.init_state()
    state, m = step(state, batch)  # compile
    jax.block_until_ready(m)
    return step, state, batch


def time_steps(step, state, batch, n: int):
    t0 = time.perf_counter()
    for _ in range(n):
        state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    return state, (time.perf_counter() - t0) / n


def with_objective(cfg, objective: str):
    sources = tuple(dataclasses.replace(s, objective=objective) for s in cfg.data.sources
                    if s.reads == "text")
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, sources=sources))


def variants(cfg, compare: str) -> dict:
    if compare == "quant":
        batch = synthetic_batch(cfg)
        none = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, quant="none"))
        return {"ternary": build(cfg, batch), "none": build(none, batch)}
    kd = with_objective(cfg, "kd")
    batch = synthetic_batch(kd, teacher_k=cfg.distill.k)
    return {"reference": build(apply_overrides(kd, REFERENCE), batch), "default": build(kd, batch),
            "ce": build(with_objective(cfg, "ce"), batch)}


RATIOS = {"paths": [("default", "reference"), ("default", "ce"), ("reference", "ce")],
          "quant": [("ternary", "none")]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="recipes/distill_tiny.py")
    ap.add_argument("--compare", choices=tuple(RATIOS), default="paths")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--steps-per-round", type=int, default=5)
    args = ap.parse_args()

    cfg = apply_overrides(load_recipe(args.recipe), args.overrides)
    runs = variants(cfg, args.compare)
    times = {k: [] for k in runs}
    ratios = {pair: [] for pair in RATIOS[args.compare]}
    for _ in range(args.rounds):
        round_times = {}
        for name, (step, state, batch) in runs.items():
            state, dt = time_steps(step, state, batch, args.steps_per_round)
            runs[name] = (step, state, batch)
            times[name].append(dt)
            round_times[name] = dt
        for a, b in ratios:
            ratios[(a, b)].append(round_times[a] / round_times[b])
    tokens = cfg.data.batch_size * cfg.data.seq_len
    print(f"recipe {args.recipe}  model d={cfg.model.d_model} layers={cfg.model.n_layers} "
          f"vocab={cfg.model.vocab_size} batch={cfg.data.batch_size}x{cfg.data.seq_len}  "
          f"backend={jax.default_backend()} devices={jax.device_count()}")
    for name in runs:
        med = statistics.median(times[name])
        print(f"  {name:<10} median step {med * 1e3:8.1f} ms   {tokens / med:10.0f} tokens/s")
    for (a, b), values in ratios.items():
        print(f"  ratio {a}/{b}: median {statistics.median(values):.3f} over {args.rounds} rounds "
              f"(min {min(values):.3f}, max {max(values):.3f})")


if __name__ == "__main__":
    main()
