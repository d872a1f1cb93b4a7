"""bitjax lm-eval: lm-evaluation-harness's own command line, with bitjax's model registered as "bitjax".

    bitjax lm-eval --model bitjax --model_args run=runs/tiny --tasks hellaswag,arc_easy --batch_size 16

Every argument after `lm-eval` is lm-eval's (`bitjax lm-eval --help` prints its help). lm-eval 0.4 loads no
model plugins, so a bare `lm_eval --model bitjax` cannot find the model; this command registers it (lazily:
nothing of bitjax or JAX loads unless the model is used) and hands over to lm-eval's `cli_evaluate`. The
model itself is bitjax.evaluation.lm_eval_model. Needs the `lm-eval` extra.
"""

from __future__ import annotations

import sys

NAME = "lm-eval"
MODEL = "bitjax.evaluation.lm_eval_model:BitjaxLM"


def add_parser(sub) -> None:
    p = sub.add_parser("lm-eval", add_help=False, help="lm-evaluation-harness with the `bitjax` model (--model "
                       "bitjax --model_args run=RUN_DIR); every argument is lm-eval's, see `bitjax lm-eval --help`")
    p.set_defaults(passes_on_arguments=True)   # bitjax.cli.main hands the rest of the command line to `run`


def run(args) -> int:
    from bitjax.errors import ConfigError

    try:
        import lm_eval.models  # noqa: F401  (registers lm-eval's own models before bitjax's joins them)
        from lm_eval.__main__ import cli_evaluate
        from lm_eval.api.registry import model_registry
    except ImportError:
        raise ConfigError("bitjax lm-eval needs lm-evaluation-harness: pip install 'bitjax[lm-eval]'") from None
    if "bitjax" not in model_registry:
        model_registry.register("bitjax", target=MODEL)
    argv, sys.argv = sys.argv, ["lm-eval", *args.unparsed]   # lm-eval's command line reads sys.argv
    try:
        cli_evaluate()
    except SystemExit as e:   # --help, and lm-eval's own argument errors
        return e.code if isinstance(e.code, int) else 0 if e.code is None else 2
    finally:
        sys.argv = argv
    return 0
