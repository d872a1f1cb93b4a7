"""bitjax eval: held-out perplexity of a trained run and its answer accuracy on held-out problems."""

from __future__ import annotations

from pathlib import Path

from bitjax.cli.arguments import at_least

NAME = "eval"


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="held-out perplexity of a trained run")
    p.add_argument("run_dir", help="a run directory written by `bitjax train`")
    p.add_argument("--batches", type=int, default=16, help="held-out batches to score (default 16)")
    p.add_argument("--prompts", default=None, help="held-out problems with gold answers (a `bitjax traces` "
                   "file) to answer greedily (default: the run's eval_prompts)")
    p.add_argument("--limit", type=int, default=None, help="answer only the first N problems")
    p.add_argument("--max-new-tokens", type=int, default=None, help="default: the run's eval_max_new_tokens")


def run(args) -> int:
    from bitjax.evaluation.heldout import evaluate, print_report
    from bitjax.paths import user_path

    user_path(args.run_dir, "RUN_DIR")
    # cheap checks first: these values are wrong whatever the run holds, so say so before restoring it
    at_least(args.batches, 1, "--batches", "the number of held-out batches")
    at_least(args.limit, 1, "--limit", "the number of problems (leave --limit out for all)")
    at_least(args.max_new_tokens, 1, "--max-new-tokens", "the number of generated tokens")
    if args.prompts is not None and not Path(args.prompts).is_file():
        from bitjax.errors import ConfigError
        raise ConfigError(f"--prompts {args.prompts}: no such file; pass a `bitjax traces --split heldout` file")

    print_report(evaluate(args.run_dir, n_batches=args.batches, prompts_file=args.prompts, limit=args.limit,
                 max_new_tokens=args.max_new_tokens))
    return 0
