"""bitjax fit-check: compile a recipe's train step for a TPU slice on this CPU."""

from __future__ import annotations

import json
from pathlib import Path

NAME = "fit-check"


def add_parser(sub) -> None:
    p = sub.add_parser("fit-check", help="compile a recipe's train step for a TPU slice on this CPU: memory, "
                       "collectives, the roofline's three terms, MFU, and whether it fits (exit 1 if not)")
    p.add_argument("recipe", help="a recipe file, e.g. recipes/bitnet_700m.py")
    p.add_argument("--topology", required=True, help="TPU slice: v4-8, v5e-16, v5p-64, v6e-8, ...")
    p.add_argument("--preset", default=None, help="launch preset to check (default: the one named like "
                   "--topology, if the recipe has it)")
    p.add_argument("--teacher-k", type=int, default=None, help="top-k of the distillation cache "
                   "(default: the recipe's distill.k)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--hlo", default=None, metavar="DIR", help="also write the compiled HLO, the buffer assignment "
                   "and XLA's memory-usage report into DIR")
    p.add_argument("--sweep", default=None, metavar="KEY=V1,V2,...", help="compile once per value of one setting "
                   "(e.g. model.n_layers=2,4,8) and print a table of memory and roofline terms")
    p.add_argument("--compare-dense", action="store_true", help="also compile the recipe as a dense network "
                   "(quant=none) in bf16 and print both steps' terms side by side")
    p.add_argument("--json", default=None, metavar="FILE", help="append each compiled step's figures to FILE "
                   "as one JSON line")


def run(args) -> int:
    from bitjax.config import apply_overrides, load_recipe, recipe_presets
    from bitjax.errors import ConfigError
    from bitjax.fit_check import check as fit_check

    fit_check.pin_cpu_platform()
    fit_check.topology(args.topology)  # an unknown name fails here, before anything is compiled
    preset = args.preset or (args.topology if args.topology in recipe_presets(args.recipe) else None)
    cfg = apply_overrides(load_recipe(args.recipe, preset), args.overrides)
    label = f"{Path(args.recipe).stem}" + (f" (preset {preset})" if preset else "")
    if args.sweep:
        key, _, values = args.sweep.partition("=")
        if not key or not values:
            raise ConfigError(f"--sweep {args.sweep!r}; write KEY=V1,V2,... e.g. --sweep model.n_layers=2,4,8")
        rows = fit_check.sweep(cfg, args.topology, key, values.split(","), label, args.teacher_k)
        print(f"fit-check {label} on {args.topology}, sweeping {key}")
        print(fit_check.render_sweep(key, rows))
        _write_json(args.json, [r for _, r in rows])
        return 0 if all(r.fits for _, r in rows) else 1
    report = fit_check.fit_check(cfg, args.topology, label, teacher_k=args.teacher_k, hlo_dir=args.hlo)
    print(report.render())
    reports = [report]
    if args.compare_dense:
        dense = fit_check.fit_check(fit_check.dense_config(cfg), args.topology, f"{label}, quant=none bf16",
                                    teacher_k=args.teacher_k)
        print(dense.render())
        print(fit_check.render_comparison(report, dense))
        reports.append(dense)
    _write_json(args.json, reports)
    return 0 if report.fits else 1


def _write_json(path, reports) -> None:
    if path:
        with open(path, "a") as f:
            for report in reports:
                f.write(json.dumps(report.summary()) + "\n")
