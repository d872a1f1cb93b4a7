"""bitjax eval: held-out perplexity of a trained run, and how many held-out problems it solves."""

from __future__ import annotations

from pathlib import Path

from bitjax.cli.arguments import at_least

NAME = "eval"


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="held-out perplexity of a trained run, and its accuracy on held-out problems")
    p.add_argument("run_dir", help="a run directory written by `bitjax train`, or a GGUF it was exported to (with "
                   "--task: its greedy accuracy in llama.cpp)")
    p.add_argument("--batches", type=int, default=16, help="held-out batches to score (default 16)")
    p.add_argument("--task", default=None, help="a task whose held-out problems the run answers: a reasoning-gym "
                   "task with its settings (chain_sum:min_terms=4,max_terms=5) or jsonl:PATH (default: the run's "
                   "eval_task)")
    p.add_argument("--problems", type=int, default=None, help="held-out problems of --task (default: the run's "
                   "eval_problems)")
    p.add_argument("--samples", type=int, default=1, help="also sample K answers per problem and report pass@K "
                   "and maj@K (default 1: greedy pass@1 only)")
    p.add_argument("--temperature", type=float, default=0.7, help="sampling temperature for --samples (default 0.7)")
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--prompts", default=None, help="held-out problems with gold answers as a `bitjax traces` "
                   "file, prompted as its teacher was (default: the run's eval_prompts)")
    p.add_argument("--limit", type=int, default=None, help="answer only the first N problems of --prompts")
    p.add_argument("--max-new-tokens", type=int, default=None, help="default: the run's eval_max_new_tokens")


def run(args) -> int:
    from bitjax.errors import ConfigError
    from bitjax.evaluation.heldout import evaluate, print_report
    from bitjax.paths import user_path

    user_path(args.run_dir, "RUN_DIR")
    # cheap checks first: these values are wrong whatever the run holds, so say so before restoring it
    at_least(args.batches, 1, "--batches", "the number of held-out batches")
    at_least(args.limit, 1, "--limit", "the number of problems (leave --limit out for all)")
    at_least(args.problems, 1, "--problems", "the number of held-out problems")
    at_least(args.samples, 1, "--samples", "the number of sampled answers per problem")
    at_least(args.max_new_tokens, 1, "--max-new-tokens", "the number of generated tokens")
    if args.prompts is not None and not Path(args.prompts).is_file():
        raise ConfigError(f"--prompts {args.prompts}: no such file; pass a `bitjax traces --split heldout` file")
    if args.task is not None:
        from bitjax.tasks import spec

        spec.parse(args.task)   # a bad task name or setting fails before the run is restored

    if str(args.run_dir).endswith(".gguf"):
        print_report(_gguf_accuracy(args))
        return 0
    print_report(evaluate(args.run_dir, n_batches=args.batches, prompts_file=args.prompts, limit=args.limit,
                          max_new_tokens=args.max_new_tokens, task=args.task, n_problems=args.problems,
                          samples=args.samples, temperature=args.temperature, top_p=args.top_p, seed=args.seed))
    return 0


def _gguf_accuracy(args) -> dict:
    """An export's greedy accuracy on a task's held-out problems, in llama.cpp (no perplexity: no data config)."""
    from bitjax.errors import ConfigError
    from bitjax.evaluation.gguf_chat import GGUFChatModel
    from bitjax.evaluation.task_accuracy import task_accuracy

    if not args.task:
        raise ConfigError(f"{args.run_dir}: a GGUF is evaluated on a task's held-out problems; pass --task")
    if args.samples != 1:
        raise ConfigError(f"--samples {args.samples}: a GGUF is evaluated greedily; sample with the run directory")
    path = Path(args.run_dir)
    return task_accuracy(GGUFChatModel(path), args.task, n_problems=args.problems or 100,
                         max_new_tokens=args.max_new_tokens or 192, answers=path.with_suffix(".answers.jsonl"))
