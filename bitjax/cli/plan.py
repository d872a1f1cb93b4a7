"""bitjax plan: how often a run reads each source, and what its teacher caches cost."""

from __future__ import annotations

import sys

NAME = "plan"


def add_parser(sub) -> None:
    p = sub.add_parser("plan", help="how many times the run reads each source's data, and what its teacher "
                       "caches cost, before anything is trained")
    p.add_argument("recipe", help="a recipe file")
    p.add_argument("--preset", default=None, help="a launch preset of the recipe")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--teacher-tokens-per-s", type=float, default=None,
                   help="the teacher's throughput, to price its caches in hours")


def run(args) -> int:
    from bitjax.config import apply_overrides, load_recipe
    from bitjax.data import build_pipeline, coverage
    from bitjax.errors import BitjaxError
    from bitjax.paths import cache_location

    cfg = apply_overrides(load_recipe(args.recipe, args.preset), args.overrides)
    cache = cfg.distill.cache if cfg.distill.cache and cache_location(cfg.distill.cache, "distill.cache").is_dir() \
        else ""
    try:
        pipeline = build_pipeline(cfg.data, teacher_cache=cache, vocab_size=cfg.model.vocab_size)
    except BitjaxError as e:   # the recipe's tokenizer or data are not on this machine: plan from the config
        print(f"bitjax: the data cannot be read here ({e}); sizes come from the recipe alone", file=sys.stderr)
        pipeline = None
    print(coverage.render(coverage.coverage(cfg, pipeline), cfg.steps, cfg.data.on_exhausted,
          args.teacher_tokens_per_s))
    return 0
