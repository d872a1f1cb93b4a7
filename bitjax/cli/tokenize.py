"""bitjax tokenize: a recipe's text sources pre-tokenized into token directories, by many processes."""

from __future__ import annotations

from pathlib import Path

NAME = "tokenize"


def add_parser(sub) -> None:
    p = sub.add_parser("tokenize", help="pre-tokenize a recipe's text sources into token shards, one per input "
                       "file (distributed over processes, resumable); read them back with tokens:DIR")
    p.add_argument("recipe", help="the recipe whose text sources and tokenizer to use")
    p.add_argument("--out", default=None, help="output directory, one sub-directory per source (default: "
                   "tokens/<recipe name>); a local path or gs://")
    p.add_argument("--process-index", type=int, default=None, help="this process's index (default: "
                   "jax.process_index() after the recipe's multi-host start)")
    p.add_argument("--process-count", type=int, default=None, help="how many processes share the inputs")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")


def run(args) -> int:
    from bitjax.config import apply_overrides, load_recipe
    from bitjax.data.pretokenize import process_slot, tokenize_recipe
    from bitjax.paths import user_path

    cfg = apply_overrides(load_recipe(args.recipe), args.overrides)
    out = user_path(args.out or f"tokens/{Path(args.recipe).stem}", "--out")
    index, count = process_slot(cfg.mesh, args.process_index, args.process_count)
    for name, summary in tokenize_recipe(cfg, out, index, count).items():
        print(f"{name}: {summary}")
    return 0
