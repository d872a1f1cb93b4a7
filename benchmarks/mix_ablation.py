"""What the 60/40 natural + rephrased mix buys: held-out nats/token on natural Shakespeare, at equal steps and tokens.

Three data arms on the shape of the embedded default (recipes/distill_tiny.py: the tiny ternary student with
SmolLM2's 49152-token vocabulary), each trained with CE and with KD from the SmolLM2 teacher's cached top-32,
each with two model seeds (12 runs):

    natural    natural Shakespeare only
    gated      60% natural + 40% rephrased lines that passed the quality gates (data/rephrased/shakespeare.jsonl)
    ungated    60% natural + 40% every rephrased candidate of the same run, kept and rejected alike

Every source reads the teacher cache (as in benchmarks/distill_results.py): the teacher's top-k over the first
sequences each source streams. The CE runs set distill.kd_weight=0, so within an arm CE and KD see the same
sequences in the same order; across arms only the rephrased share differs. The cache holds fewer sequences than
a run reads (the teacher is the costly part on a CPU), so every run makes several passes over its sequences:
a data-limited regime, stated with the table. Held-out loss is measured on the natural source's held-out tail
only (the same tokens for every arm), never on rephrased text.

    python -m benchmarks.mix_ablation                       # the README table (about 45 minutes on 2 busy cores)
    python -m benchmarks.mix_ablation --smoke               # a few steps at tiny shapes: checks the plumbing
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import time
from pathlib import Path

from bitjax import data as data_lib
from bitjax.config import SourceConfig, load_recipe

ROOT = Path(__file__).resolve().parent.parent
KEPT = ROOT / "data" / "rephrased" / "shakespeare.jsonl"
REJECTED = ROOT / "data" / "rephrased" / "shakespeare.rejected.jsonl"
ARMS = ("natural", "gated", "ungated")


@dataclasses.dataclass(frozen=True)
class Budget:
    steps: int = 80
    batch_size: int = 4
    seq_len: int = 128
    cache_examples: int = 120      # sequences the teacher scores per arm (split 60/40 in the mixed arms)
    eval_batches: int = 16
    seeds: tuple[int, ...] = (0, 1)
    n_layers: int = 0              # 0: the recipe's


SMOKE = Budget(steps=2, batch_size=2, seq_len=32, cache_examples=4, eval_batches=1, seeds=(0,), n_layers=1)


def ungated_file(out: Path, kept: Path, rejected: Path) -> Path:
    """Kept + rejected lines in one file: what the rephraser would have shipped without gates."""
    path = out / "ungated.jsonl"
    records = [json.loads(line) for f in (kept, rejected) if f.exists()
               for line in f.read_text(encoding="utf-8").splitlines()]
    # In id order, so kept lines do not all come first (the first documents the shuffle draws would then be
    # the gated arm's too).
    lines = [json.dumps(r, ensure_ascii=False) for r in sorted(records, key=lambda r: r["id"]) if r["text"].strip()]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def arm_config(base, arm: str, out: Path, budget: Budget, *, kd: bool, seed: int, kept: Path = KEPT):
    natural = SourceConfig("natural", "tfds:shakespeare", weight=1.0 if arm == "natural" else 0.6, objective="kd")
    rephrased = {"gated": kept, "ungated": out / "ungated.jsonl"}.get(arm)
    sources = (natural,) if rephrased is None else (
        natural, SourceConfig("rephrased", f"jsonl:{rephrased}", weight=0.4, objective="kd"))
    data = dataclasses.replace(base.data, sources=sources, seq_len=budget.seq_len, batch_size=budget.batch_size)
    distill = dataclasses.replace(base.distill, cache=str(out / "caches" / arm), cache_examples=budget.cache_examples,
                                  kd_weight=base.distill.kd_weight if kd else 0.0)
    model = dataclasses.replace(base.model, max_seq_len=max(budget.seq_len, 32),
                                n_layers=budget.n_layers or base.model.n_layers)
    return dataclasses.replace(base, name=f"mix_{arm}", model=model, data=data, distill=distill, seed=seed,
                               steps=budget.steps, eval_every=budget.steps, eval_batches=1, eval_prompts="",
                               log_every=max(1, budget.steps // 4),
                               checkpoint=dataclasses.replace(base.checkpoint, every=budget.steps),
                               optim=dataclasses.replace(base.optim,
                                                         warmup_steps=min(base.optim.warmup_steps, budget.steps)))


def natural_heldout_loss(run_dir: Path, n_batches: int) -> tuple[float, int]:
    """Token-mean CE of a run's model on the natural source's held-out tail (the same tokens for every arm)."""
    from bitjax.evaluation.heldout import summed_loss
    from bitjax.run import Run

    run = Run(run_dir)
    natural = dataclasses.replace(run.config.data, weights="",
                                  sources=tuple(s for s in run.config.data.sources if s.name == "natural"))
    total, count = summed_loss(run, data_lib.build_pipeline(natural, text_only=True).heldout_batches(n_batches))
    return total / max(count, 1.0), int(count)


def write_caches(base, arm: str, out: Path, budget: Budget, kept: Path) -> None:
    """The teacher's top-k for an arm. The natural sequences are cached once, for the natural arm, and shared:
    the natural source streams the same sequences in every arm (same place in the source list, same shuffle),
    so every arm draws on one pool of natural sequences and the mixed arms add rephrased ones."""
    from bitjax.teachers.cache_teacher import cache_teacher

    natural_cfg = arm_config(base, "natural", out, budget, kd=True, seed=0, kept=kept)
    cache_teacher(natural_cfg, natural_cfg.distill.teacher, natural_cfg.distill.cache, k=natural_cfg.distill.k,
                  n_examples=budget.cache_examples, progress=False)
    if arm == "natural":
        return
    cfg = arm_config(base, arm, out, budget, kd=True, seed=0, kept=kept)
    root = Path(cfg.distill.cache)
    root.mkdir(parents=True, exist_ok=True)
    if not (root / "natural").exists():
        (root / "natural").symlink_to(Path(natural_cfg.distill.cache).resolve() / "natural", target_is_directory=True)
    # Natural at weight 0 keeps its place in the source list, so the rephrased stream cached is the one training reads.
    only_rephrased = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, weights="natural=0"))
    cache_teacher(only_rephrased, cfg.distill.teacher, root, k=cfg.distill.k,
                  n_examples=max(1, round(0.4 * budget.cache_examples)), progress=False)


def read_results(out: Path) -> dict:
    """Every finished run's result (one file per run, so two processes can share a grid)."""
    results = json.loads((out / "results.json").read_text()) if (out / "results.json").exists() else {}
    for path in sorted((out / "runs").glob("*/heldout.json")):
        record = json.loads(path.read_text())
        results[record.pop("key")] = record
    return results


def run_grid(base, out: Path, budget: Budget, *, kept: Path = KEPT, rejected: Path = REJECTED,
             arms: tuple[str, ...] = ARMS) -> dict:
    from bitjax.training import train

    out.mkdir(parents=True, exist_ok=True)
    ungated_file(out, kept, rejected)
    for arm in arms:
        t0 = time.perf_counter()
        write_caches(base, arm, out, budget, kept)
        print(f"[{arm}] teacher cache: {time.perf_counter() - t0:.0f} s", flush=True)
        for kd in (False, True):
            for seed in budget.seeds:
                key = f"{arm}/{'kd' if kd else 'ce'}/seed{seed}"
                if key in read_results(out):          # a rerun continues the grid where it stopped
                    continue
                run_dir = out / "runs" / key.replace("/", "-")
                t0 = time.perf_counter()
                train(arm_config(base, arm, out, budget, kd=kd, seed=seed, kept=kept), run_dir, progress=False)
                loss, tokens = natural_heldout_loss(run_dir, budget.eval_batches)
                record = {"heldout_loss": loss, "heldout_tokens": tokens, "seconds": round(time.perf_counter() - t0, 1)}
                (run_dir / "heldout.json").write_text(json.dumps({"key": key, **record}))
                print(f"{key}: {loss:.4f} nats/token on {tokens} natural held-out tokens ({record['seconds']} s)",
                      flush=True)
    results = read_results(out)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    return results


def print_table(results: dict, budget: Budget, base) -> None:
    tokens = budget.steps * budget.batch_size * budget.seq_len
    rows = budget.steps * budget.batch_size
    natural_passes, rephrased = rows / budget.cache_examples, round(0.4 * budget.cache_examples)
    print(f"\n{budget.steps} steps x {budget.batch_size} x {budget.seq_len} = {tokens} tokens per run; cached: "
          f"{budget.cache_examples} natural sequences shared by all arms (natural only: {natural_passes:.1f}"
          f" passes) + {rephrased} rephrased per mixed arm ({0.4 * rows / rephrased:.1f}"
          f" passes; their natural rows {0.6 * rows / budget.cache_examples:.1f} passes); model "
          f"d={base.model.d_model}, {budget.n_layers or base.model.n_layers} layers, vocab {base.model.vocab_size}; "
          f"seeds {', '.join(map(str, budget.seeds))}\n")
    print("| data | CE: held-out nats/token | KD: held-out nats/token |")
    print("|---|---|---|")
    for arm in [a for a in ARMS if any(k.startswith(a + "/") for k in results)]:
        cells = []
        for obj in ("ce", "kd"):
            losses = [results[f"{arm}/{obj}/seed{s}"]["heldout_loss"] for s in budget.seeds
                      if f"{arm}/{obj}/seed{s}" in results]
            spread = f" ({', '.join(f'{x:.4f}' for x in losses)})" if len(losses) > 1 else ""
            cells.append(f"{statistics.mean(losses):.4f}{spread}" if losses else "-")
        print(f"| {arm} | {cells[0]} | {cells[1]} |")
    for obj in ("ce", "kd"):
        mean = {arm: statistics.mean(results[f"{arm}/{obj}/seed{s}"]["heldout_loss"] for s in budget.seeds)
                for arm in ARMS if all(f"{arm}/{obj}/seed{s}" in results for s in budget.seeds)}
        if len(mean) < len(ARMS):
            continue
        print(f"{obj.upper()}: gated - natural {mean['gated'] - mean['natural']:+.4f}, ungated - natural "
              f"{mean['ungated'] - mean['natural']:+.4f}, gated - ungated {mean['gated'] - mean['ungated']:+.4f} "
              f"nats/token (perplexity natural {math.exp(mean['natural']):.1f})")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default=str(ROOT / "recipes" / "distill_tiny.py"))
    ap.add_argument("--out", default="runs/mix_ablation")
    ap.add_argument("--smoke", action="store_true", help="2 steps at tiny shapes, one seed: checks the plumbing")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--kept", default=str(KEPT), help="rephrased lines that passed the gates")
    ap.add_argument("--rejected", default=str(REJECTED), help="their side file of rejected lines")
    ap.add_argument("--arms", default=",".join(ARMS), help="a subset of natural,gated,ungated")
    args = ap.parse_args(argv)
    budget = SMOKE if args.smoke else Budget()
    if args.steps:
        budget = dataclasses.replace(budget, steps=args.steps)
    base = load_recipe(args.recipe)
    results = run_grid(base, Path(args.out), budget, kept=Path(args.kept), rejected=Path(args.rejected),
                       arms=tuple(a for a in args.arms.split(",") if a))
    print_table(results, budget, base)
    return results


if __name__ == "__main__":
    main()
