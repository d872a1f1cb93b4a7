"""bitjax bench: time a recipe's real train step on the devices present; with --compare-dense, its dense twin too."""

from __future__ import annotations

import json
from pathlib import Path

NAME = "bench"


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="run a recipe's train step on this machine's devices (TPU, GPU or CPU): step "
                       "time, tokens/s per device, MFU, memory; one JSON line per run")
    p.add_argument("recipe", help="a recipe file, e.g. recipes/bitnet_125m.py")
    p.add_argument("--preset", default=None, help="launch preset (the mesh and batch for a machine, e.g. h100x1)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--steps", type=int, default=5, help="steps per timed round (default 5)")
    p.add_argument("--rounds", type=int, default=5, help="timed rounds; the figures are medians (default 5)")
    p.add_argument("--warmup", type=int, default=2, help="steps run before timing, the compiling one included")
    p.add_argument("--compare-dense", action="store_true", help="also time the recipe as a dense network "
                   "(quant=none) in bf16, alternating rounds with the ternary step")
    p.add_argument("--teacher-k", type=int, default=None, help="top-k of the synthetic teacher fields "
                   "(default: the recipe's distill.k)")
    p.add_argument("--peak-tflops", type=float, default=None, help="bf16 peak of one device in TFLOP/s, for a "
                   "device bitjax has no figure for (CPUs have none: no MFU without it)")
    p.add_argument("--json", default=None, metavar="FILE", help="append the run's JSON line to FILE (it is "
                   "printed last in any case)")


def run(args) -> int:
    from bitjax.config import apply_overrides, load_recipe
    from bitjax.errors import ConfigError
    from bitjax.fit_check import bench

    for name in ("steps", "rounds", "warmup"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name}={getattr(args, name)}; give a positive number")
    cfg = apply_overrides(load_recipe(args.recipe, args.preset), args.overrides)
    label = Path(args.recipe).stem + (f" (preset {args.preset})" if args.preset else "")
    summary = bench.bench(cfg, label, rounds=args.rounds, steps=args.steps, warmup=args.warmup,
                          compare_dense=args.compare_dense, teacher_k=args.teacher_k,
                          peak_flops=args.peak_tflops * 1e12 if args.peak_tflops else None)
    print(bench.render(summary))
    line = json.dumps(summary)
    if args.json and summary["process_index"] == 0:   # one line per run, however many hosts ran it
        with open(args.json, "a") as f:
            f.write(line + "\n")
    print(line)
    return 0
