"""bitjax cache-teacher: a teacher's top-k log-probabilities for the sequences of a recipe's kd sources."""

from __future__ import annotations

from bitjax.cli.arguments import at_least

NAME = "cache-teacher"


def add_parser(sub) -> None:
    p = sub.add_parser("cache-teacher", help="write a teacher's top-k log-probabilities for the sequences "
                       "of a recipe's distillation ('kd') sources")
    p.add_argument("recipe", help="the recipe whose data (and tokenizer) the cache is for")
    p.add_argument("--teacher", default=None,
                   help="gguf:PATH, gguf:ORG/NAME/FILE.gguf, gguf:smollm2, hf:DIR, hf:ORG/NAME[@REVISION] or "
                   "bitjax:RUN_DIR (default: the recipe's distill.teacher)")
    p.add_argument("--out", default=None, help="cache directory, one sub-cache per source (default: the "
                   "recipe's distill.cache; resumable: finished shards are kept)")
    p.add_argument("--k", type=int, default=None, help="top-k entries per position (default: distill.k)")
    p.add_argument("--examples", type=int, default=None,
                   help="sequences to cache, split over the kd sources (default: distill.cache_examples)")
    p.add_argument("--shards", type=int, default=4, help="ArrayRecord shards per source (default 4)")
    p.add_argument("--backend", default=None, choices=["native", "jax"],
                   help="native: llama.cpp / CPU torch, one document at a time; jax: the teacher imported into "
                   "bitjax, jitted and sharded over the recipe's mesh, data.batch_size rows per forward "
                   "(default: distill.cache_backend)")
    p.add_argument("--preset", default=None, help="a launch preset of the recipe (its mesh and batch)")
    p.add_argument("--logprob-dtype", default="float16", choices=["float16", "float32"],
                   help="storage of the top-k log-probabilities (default float16)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")


def run(args) -> int:
    from bitjax.config import apply_overrides, load_recipe
    from bitjax.errors import ConfigError
    from bitjax.paths import cache_location
    from bitjax.teachers.cache_teacher import cache_teacher

    at_least(args.examples, 1, "--examples", "the number of cached sequences")
    at_least(args.shards, 1, "--shards", "the number of shards")
    at_least(args.k, 1, "--k", "the top-k")
    cfg = apply_overrides(load_recipe(args.recipe, args.preset), args.overrides)
    teacher, out = args.teacher or cfg.distill.teacher, args.out or cfg.distill.cache
    if not teacher or not out:
        raise ConfigError(f"recipe {args.recipe} names no distill.teacher / distill.cache; pass --teacher and --out")
    out = cache_location(out, "--out")   # an unknown scheme or bucket fails here, before anything is read
    manifests = cache_teacher(cfg, teacher, out, k=args.k if args.k is not None else cfg.distill.k,
                              n_examples=args.examples if args.examples is not None else cfg.distill.cache_examples,
                              num_shards=args.shards, logprob_dtype=args.logprob_dtype, backend=args.backend)
    for name, m in manifests.items():
        print(f"{name}: {m['records']} sequences x {m['seq_len']} positions in {out / name}, "
              f"{m['bytes_per_token']} bytes/token of teacher data "
              f"(full vocabulary in fp16: {2 * m['vocab_size']} bytes/token)")
    return 0
