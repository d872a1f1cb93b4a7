"""The `bitjax` command: one module per command (its arguments and a thin `run`), assembled here.

  train, cache_teacher, tokenize, traces, rephrase     making a run and its data
  problems                                             a task's problems with worked solutions, to train on
  evaluate (`bitjax eval`), generate, export, serve    using a trained run
  lm_eval_harness (`bitjax lm-eval`)                   lm-evaluation-harness with the `bitjax` model
  fit_check, plan                                      checking a recipe before it runs
  bench                                                timing its step on the devices present

Each command module defines NAME, `add_parser(subparsers)` and `run(args) -> exit code`; its library imports
sit inside `run`, so `bitjax --help` does not load JAX. A command whose parser sets `passes_on_arguments`
gets the arguments it does not parse itself as `args.unparsed` (another program's command line). Errors a
user can act on (bitjax.errors.BitjaxError)
print one line and exit 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys

from bitjax.cli import (
    bench,
    cache_teacher,
    evaluate,
    export,
    fit_check,
    generate,
    lm_eval_harness,
    plan,
    problems,
    rephrase,
    serve,
    tokenize,
    traces,
    train,
)

COMMANDS = (train, cache_teacher, tokenize, evaluate, lm_eval_harness, fit_check, plan, bench, export, generate,
            serve, rephrase, problems, traces)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bitjax", description="Train and ship native 1.58-bit LMs.")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    args, unparsed = parser.parse_known_args(argv)
    if unparsed and not getattr(args, "passes_on_arguments", False):
        parser.error(f"unrecognized arguments: {' '.join(unparsed)}")
    args.unparsed = unparsed
    _quiet_libraries()
    from bitjax.errors import BitjaxError

    run = {command.NAME: command.run for command in COMMANDS}[args.command]
    try:
        return run(args)
    except BitjaxError as e:   # anything else is a bug in bitjax and keeps its traceback
        print(f"bitjax: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:   # a second Ctrl-C during training, or one during any other command
        print("bitjax: interrupted; what was written before stays (a rerun of train resumes from its newest "
              "complete checkpoint)", file=sys.stderr)
        return 130


def _quiet_libraries() -> None:
    """Keep stderr for bitjax's own one-line errors: absl (Orbax), JAX and TensorFlow log warnings there.

    Orbax also logs each failure of its background save threads (with tracebacks) before the failure reaches
    bitjax's own error (a full disk is one line, not pages): absl and asyncio are kept to CRITICAL.
    """
    import logging
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    for name in ("jax", "jax._src", "tensorflow", "grain", "array_record"):
        logging.getLogger(name).setLevel(logging.ERROR)
    for name in ("absl", "orbax"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    # Orbax writes arrays in asyncio tasks: when one write fails (a full disk) the others' failures are logged by
    # asyncio as "Task exception was never retrieved"; the first one is bitjax's one-line error already.
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)


if __name__ == "__main__":
    sys.exit(main())
