"""bitjax train: train a recipe, or resume it from its run directory."""

from __future__ import annotations

from pathlib import Path

NAME = "train"


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a recipe; resumes from --workdir if it holds a checkpoint")
    p.add_argument("recipe", help="a recipe file with get_config(), e.g. recipes/tiny.py")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set optim.peak_lr=3e-4 (repeatable)")
    p.add_argument("--workdir", default=None, help="run directory (default: runs/<recipe name>)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar or summary")
    p.add_argument("--preset", default=None, help="a launch preset of the recipe (mesh and batch for a "
                   "machine), e.g. v5p-64 or h100x8")


def run(args) -> int:
    from bitjax.config import apply_overrides, load_recipe
    from bitjax.errors import ConfigError
    from bitjax.paths import cache_location, check_checkpoint_store, user_path

    # a location that cannot be opened is refused here, before anything is read or written
    workdir = user_path(args.workdir or f"runs/{Path(args.recipe).stem}", "--workdir")
    check_checkpoint_store(workdir, "--workdir")
    if workdir.exists() and not workdir.is_dir():
        raise ConfigError(f"--workdir {workdir} is a file, not a directory; pass a new or existing run directory")
    cfg = apply_overrides(load_recipe(args.recipe, args.preset), args.overrides)
    from bitjax.data.sources.uris import check_location
    for source in cfg.data.sources:   # a bucket without credentials fails here, in one line
        check_location(source)
    if cfg.distill.cache and not cfg.distill.online:
        cache_location(cfg.distill.cache, "distill.cache")
    from bitjax.training import train  # imported after the config is checked: a bad value fails in a second

    summary = train(cfg, workdir, progress=not args.no_progress)
    # SIGTERM (preemption) saved a checkpoint: success; Ctrl-C saved one too, but the run is not done: 130
    return 130 if summary.get("stopped_by") == "SIGINT" else 0
