"""fit-check of the accelerator recipes on their slices, ternary and dense bf16 side by side: the tables in
docs/sharding.md and README, from the JSON lines `bitjax fit-check --json` writes.

    python -m benchmarks.fit_check_table                  # print the tables from benchmarks/results/fit_check.jsonl
    python -m benchmarks.fit_check_table --run            # compile them again (one at a time: hours on 2 cores)

The recorded lines are what the slow test of every recipe compares its compiled memory with
(tests/fit_check/test_fit_check.py), and what the H100 presets' arithmetic reads (test_gpu_presets.py).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECORDED = ROOT / "benchmarks" / "results" / "fit_check.jsonl"
# (recipe, topology): the stated slices, and v6e-64 for the int8 comparison on the bigger recipes
RUNS = (("bitnet_125m", "v5e-16"), ("bitnet_700m", "v5p-64"), ("bitnet_2b4t", "v5p-64"),
        ("bitnet_700m", "v6e-64"), ("bitnet_2b4t", "v6e-64"))


def read(path: Path = RECORDED) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def recorded(recipe: str, topology: str, quant: str = "ternary", path: Path = RECORDED) -> dict:
    """The last recorded fit-check line of a recipe on a slice (the recipe's preset for that slice)."""
    found = [r for r in read(path) if r["recipe"].split(" ")[0].rstrip(",") == recipe
             and r["topology"] == topology and r["quant"] == quant]
    if not found:
        raise KeyError(f"no fit-check line of {recipe} ({quant}) on {topology} in {path}")
    return found[-1]


def run(out: Path) -> None:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    for recipe, topology in RUNS:
        subprocess.run([sys.executable, "-m", "bitjax.cli", "fit-check", str(ROOT / "recipes" / f"{recipe}.py"),
                        "--topology", topology, "--compare-dense", "--json", str(out)], env=env, check=False)


def _codes(r: dict) -> str:
    gb = sum(v["array"] for k, v in r["collectives_gb"].items()
             if k.split(" ")[1] in ("s8", "u8") and k.split(" ")[0] in ("all-gather", "collective-permute"))
    return f"{gb:.2f}"


def table(rows: list[dict]) -> str:
    lines = ["| recipe, slice | step | memory per chip (GiB) | compute / HBM / collectives (ms) | binds | est. step "
             "| MFU bound | codes gathered (GB) |",
             "|---|---|---|---|---|---|---|---|"]
    pairs = {}
    for r in rows:
        recipe = r["recipe"].split(" ")[0].rstrip(",")
        pairs.setdefault((recipe, r["topology"]), {})[r["quant"]] = r
    for (recipe, topology), by_quant in pairs.items():
        for quant, name in (("ternary", "ternary"), ("none", "dense bf16")):
            r = by_quant.get(quant)
            if r is None or r.get("oom"):
                continue
            lines.append(f"| {recipe}, {topology} ({r['rows_per_chip']:.0f} x {r['seq_len']} per chip) | {name} | "
                         f"{r['total_gib']:.2f} | {r['compute_ms']:.1f} / {r['hbm_ms']:.1f} / "
                         f"{r['collective_ms']:.1f} | {r['bound']} | {r['step_ms']:.1f} ms | {r['mfu']:.0%} | "
                         f"{_codes(r)} |")
        if {"ternary", "none"} <= set(by_quant) and not any(r.get("oom") for r in by_quant.values()):
            ratio = by_quant["ternary"]["step_ms"] / by_quant["none"]["step_ms"]
            lines.append(f"| | ternary / dense | | | | {ratio:.2f}x | | |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", action="store_true", help="compile every recipe again, appending to --file")
    ap.add_argument("--file", type=Path, default=RECORDED)
    args = ap.parse_args()
    if args.run:
        run(args.file)
    print(table(read(args.file)))


if __name__ == "__main__":
    main()
