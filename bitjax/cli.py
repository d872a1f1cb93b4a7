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

    export = sub.add_parser("export", help="export a run's latest checkpoint to GGUF (llama.cpp) or packed safetensors")
    export.add_argument("run_dir", help="a directory written by `bitjax train`")
    export.add_argument("out", help="output: a .gguf file, or a directory for --format packed")
    export.add_argument("--format", required=True, choices=["gguf", "packed"])
    export.add_argument("--type", dest="gguf_type", default=None, choices=["tq2_0", "tq1_0", "f16", "f32"],
                        help="GGUF tensor type of the ternary weights (default tq2_0)")
    export.add_argument("--force", action="store_true", help="replace an existing output")
    export.add_argument("--allow-runtime-mismatch", action="store_true",
                        help="write even if the target runtime is known to compute the model differently")

    args = parser.parse_args(argv)
    from bitjax.config import ConfigError
    from bitjax.export.common import ExportError
    from bitjax.train import TrainingError
    try:
        if args.command == "train":
            return _train(args)
        if args.command == "export":
            return _export(args)
    except (ConfigError, TrainingError, ExportError) as e:
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


def _export(args) -> int:
    from bitjax.export import export_run

    result = export_run(args.run_dir, args.out, format=args.format, gguf_type=args.gguf_type, force=args.force,
                        allow_runtime_mismatch=args.allow_runtime_mismatch, progress=True)
    kind = result["format"] + (f" {result['type']}" if result["type"] else "")
    print(f"wrote {result['path']} ({kind}, {result['bytes'] / 1e6:.2f} MB, step {result['step']}); "
          "every ternary code read back equals the training quantizer's")
    return 0


if __name__ == "__main__":
    sys.exit(main())
