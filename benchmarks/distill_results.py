"""The distillation results table: at equal steps and tokens, held-out perplexity and gsm_symbolic answer
accuracy of (a) the teacher, (b) a full-precision student trained with CE, (c) the ternary student with CE,
(d) the ternary student with KD from the teacher cache, (e) the ternary student with KD plus traces.

(b)-(d) train on the same cached sequences in the same order (the recipe's traces sources switched off);
CE runs set distill.kd_weight=0, so KD is the only difference between (c) and (d). (e) is the recipe as
it is, a tenth of its rows being teacher traces (SFT and REDI). The cache is written first if missing.

    python -m benchmarks.distill_results [--recipe recipes/distill_tiny.py] [--out runs/distill_results]
    python -m benchmarks.distill_results --only cd --set seed=1 --out runs/distill_results_seed1   # seed noise
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from bitjax import data as data_lib
from bitjax.config import apply_overrides, load_recipe
from bitjax.data.teacher_files import traces as traces_lib
from bitjax.evaluation.heldout import evaluate
from bitjax.teachers.backends import open_teacher, teacher_perplexity
from bitjax.teachers.cache_teacher import cache_teacher
from bitjax.training import train

NO_TRACES = "data.weights=sft=0,redi=0"
STUDENTS = {
    "b": ("full-precision student, CE", ["model.quant=none", "distill.kd_weight=0", NO_TRACES]),
    "c": ("ternary student, CE", ["distill.kd_weight=0", NO_TRACES]),
    "d": ("ternary student, KD from the cache", [NO_TRACES]),
    "e": ("ternary student, KD + traces (SFT, REDI)", []),
}


def teacher_row(cfg, n_batches: int) -> dict:
    pipeline = data_lib.build_pipeline(cfg.data, text_only=True)
    report = teacher_perplexity(open_teacher(cfg.distill.teacher), pipeline, n_batches)
    # The teacher's greedy completions of the held-out problems are the eval file itself (bitjax traces, T=0).
    problems = {r["prompt_id"]: r for r in traces_lib.read_traces(cfg.eval_prompts)}
    correct = sum(r["label"] == "positive" for r in problems.values())
    return {**report, "problems": len(problems), "correct": correct, "answer_accuracy": correct / len(problems)}


def _accuracy(report: dict) -> str:
    """`correct/problems`, or n/a when the run names no held-out problems (eval_prompts empty)."""
    return f"{report['correct']}/{report['problems']}" if "problems" in report else "n/a"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="recipes/distill_tiny.py")
    ap.add_argument("--out", default="runs/distill_results")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="applied to every student")
    ap.add_argument("--batches", type=int, default=16, help="held-out batches for perplexity")
    ap.add_argument("--only", default="abcde", help="rows to compute, e.g. 'cd' for a second seed of (c), (d)")
    args = ap.parse_args()

    cfg = apply_overrides(load_recipe(args.recipe), args.overrides)
    out = Path(args.out)
    cache_teacher(cfg, cfg.distill.teacher, cfg.distill.cache, k=cfg.distill.k,
                  n_examples=cfg.distill.cache_examples)
    rows = {"a": ("teacher: " + cfg.distill.teacher, teacher_row(cfg, args.batches))} if "a" in args.only else {}
    for key, (label, overrides) in STUDENTS.items():
        if key not in args.only:
            continue
        student = apply_overrides(cfg, overrides)
        t0 = time.perf_counter()
        train(student, out / key, progress=False)
        report = evaluate(out / key, n_batches=args.batches)
        rows[key] = (label, {**report, "train_seconds": round(time.perf_counter() - t0, 1)})
        print(f"({key}) {label}: perplexity {report['heldout_perplexity']:.2f}, accuracy {_accuracy(report)}",
              flush=True)
    (out / "results.json").write_text(json.dumps({k: {"label": v[0], **v[1]} for k, v in rows.items()}, indent=2))

    tokens = cfg.steps * cfg.data.batch_size * cfg.data.seq_len
    any_row = next(iter(rows.values()))[1]
    print(f"\n{args.recipe}: {cfg.steps} steps x {cfg.data.batch_size} x {cfg.data.seq_len} = {tokens} tokens per "
          f"student; held-out perplexity on {any_row['heldout_tokens']} tokens of the text sources' held-out "
          f"documents; answers: greedy, {any_row.get('problems', 0)} held-out gsm_symbolic problems\n")
    print("| | model | held-out perplexity | gsm_symbolic accuracy |")
    print("|---|---|---|---|")
    for key, (label, r) in rows.items():
        print(f"| ({key}) | {label} | {r['heldout_perplexity']:.2f} | {_accuracy(r)} |")
    loss = {k: r["heldout_loss"] for k, (_, r) in rows.items()}
    ppl = {k: math.exp(v) for k, v in loss.items()}
    if {"c", "d"} <= set(ppl):
        print(f"\nKD vs CE (ternary): perplexity {ppl['c']:.2f} -> {ppl['d']:.2f} "
              f"({100 * (ppl['c'] - ppl['d']) / ppl['c']:.1f}% lower); loss {loss['c']:.4f} -> {loss['d']:.4f} "
              "nats/token")
    if {"a", "c", "d"} <= set(ppl):
        print(f"fraction of the (c)-to-teacher gap closed by KD, in loss: "
              f"{(loss['c'] - loss['d']) / (loss['c'] - loss['a']):.3f}")
    if {"d", "e"} <= set(ppl):
        print(f"traces on top of KD: perplexity {ppl['d']:.2f} -> {ppl['e']:.2f}")


if __name__ == "__main__":
    main()
