"""`bitjax` command line: thin entry points over the library."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bitjax", description="Train and ship native 1.58-bit LMs.")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a recipe; resumes from --workdir if it holds a checkpoint")
    train.add_argument("recipe", help="a recipe file with get_config(), e.g. recipes/tiny.py")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config field, e.g. --set optim.peak_lr=3e-4 (repeatable)")
    train.add_argument("--workdir", default=None, help="run directory (default: runs/<recipe name>)")
    train.add_argument("--no-progress", action="store_true", help="no progress bar or summary")

    reph = sub.add_parser("rephrase", help="rewrite natural documents into denser formats with a generator model")
    reph.add_argument("--source", default="tfds:shakespeare",
                      help="documents to rephrase: tfds:shakespeare, tfds:kjv, jsonl:PATH, arrayrecord:PATH")
    reph.add_argument("--out", required=True, help="JSONL output; rerunning appends what is missing")
    reph.add_argument("--formats", default="qa,textbook,summary",
                      help="comma-separated prompt names from --prompts (default: qa,textbook,summary)")
    reph.add_argument("--generator", default="smollm2",
                      help="'smollm2' (the embedded GGUF), a .gguf file (llama.cpp) or a transformers model dir")
    reph.add_argument("--limit", type=int, default=None, help="rephrase only the first N documents")
    reph.add_argument("--max-new-tokens", type=int, default=128)
    reph.add_argument("--temperature", type=float, default=0.7)
    reph.add_argument("--top-p", type=float, default=0.9)
    reph.add_argument("--seed", type=int, default=0)
    reph.add_argument("--max-chars", type=int, default=800, help="passage length given to the generator")
    reph.add_argument("--threads", type=int, default=1,
                      help="llama.cpp threads (1 is fastest on a busy machine: threads spin-wait on each other)")
    reph.add_argument("--prompts", default=None, help="directory of <format>.txt prompts (default: data/rephrase)")
    reph.add_argument("--no-progress", action="store_true")

    args = parser.parse_args(argv)
    from bitjax.config import ConfigError
    from bitjax.train import TrainingError
    try:
        if args.command == "train":
            return _train(args)
        if args.command == "rephrase":
            return _rephrase(args)
    except (ConfigError, TrainingError) as e:
        print(f"bitjax: error: {e}", file=sys.stderr)
        return 2
    return 0


def _train(args) -> int:
    from bitjax.config import apply_overrides, load_recipe
    from bitjax.train import train

    cfg = apply_overrides(load_recipe(args.recipe), args.overrides)
    workdir = Path(args.workdir or Path("runs") / Path(args.recipe).stem)
    result = train(cfg, workdir, progress=not args.no_progress)
    return 0 if "stopped_at" not in result else 0


def _rephrase(args) -> int:
    import json

    from bitjax import rephrase

    settings = rephrase.Settings(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                                 top_p=args.top_p, seed=args.seed, max_chars=args.max_chars)
    summary = rephrase.rephrase(
        args.source, args.out, formats=[f for f in args.formats.split(",") if f], generator=args.generator,
        limit=args.limit, settings=settings, n_threads=args.threads,
        prompts_dir=Path(args.prompts) if args.prompts else rephrase.PROMPTS_DIR, progress=not args.no_progress)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
