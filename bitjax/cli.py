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

    cache = sub.add_parser("cache-teacher", help="write a teacher's top-k log-probabilities for a recipe's data")
    cache.add_argument("recipe", help="the recipe whose data (and tokenizer) the cache is for")
    cache.add_argument("--teacher", required=True, help="gguf:PATH, hf:DIR or bitjax:RUN_DIR")
    cache.add_argument("--out", required=True, help="cache directory (resumable: finished shards are kept)")
    cache.add_argument("--k", type=int, default=32, help="top-k entries per position (default 32)")
    cache.add_argument("--examples", type=int, default=256, help="training examples to cache (default 256)")
    cache.add_argument("--shards", type=int, default=4, help="ArrayRecord shards (default 4)")
    cache.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")

    evaluate = sub.add_parser("eval", help="held-out perplexity of a trained run")
    evaluate.add_argument("run_dir", help="a run directory written by `bitjax train`")
    evaluate.add_argument("--batches", type=int, default=16, help="held-out batches to score (default 16)")

    args = parser.parse_args(argv)
    from bitjax.config import ConfigError
    from bitjax.topk_cache import CacheError
    from bitjax.train import TrainingError
    try:
        if args.command == "train":
            return _train(args)
        if args.command == "rephrase":
            return _rephrase(args)
        if args.command == "eval":
            return _eval(args)
        if args.command == "cache-teacher":
            return _cache_teacher(args)
    except (ConfigError, TrainingError, CacheError) as e:
        print(f"bitjax: error: {e}", file=sys.stderr)
        return 2
    return 0


def _train(args) -> int:
    from bitjax.config import apply_overrides, load_recipe
    from bitjax.train import train

    cfg = apply_overrides(load_recipe(args.recipe), args.overrides)
    workdir = Path(args.workdir or Path("runs") / Path(args.recipe).stem)
    train(cfg, workdir, progress=not args.no_progress)  # a SIGTERM stop saved a checkpoint: also success
    return 0


def _cache_teacher(args) -> int:
    from bitjax.cache_teacher import cache_teacher
    from bitjax.config import apply_overrides, load_recipe

    cfg = apply_overrides(load_recipe(args.recipe), args.overrides)
    manifest = cache_teacher(cfg, args.teacher, args.out, k=args.k, n_examples=args.examples,
                             num_shards=args.shards)
    if manifest:
        print(f"wrote {manifest['records']} examples x {manifest['seq_len']} positions to {args.out}: "
              f"{manifest['bytes_per_token']} bytes/token of teacher data "
              f"(full vocabulary in fp16: {2 * manifest['vocab_size']} bytes/token)")
    return 0


def _eval(args) -> int:
    from bitjax.evaluate import heldout_perplexity, print_report

    print_report(heldout_perplexity(args.run_dir, args.batches))
    return 0


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
