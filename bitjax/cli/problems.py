"""bitjax problems: a task's problems with worked (or answer-only) solutions, as prompt/completion JSONL to train on."""

from __future__ import annotations

from bitjax.cli.arguments import at_least

NAME = "problems"


def add_parser(sub) -> None:
    p = sub.add_parser("problems", help="write a task's problems with verified worked solutions (or the answer "
                       "alone) as prompt/completion JSONL, in bitjax's chat template")
    p.add_argument("--task", required=True, help="a reasoning-gym task with its settings, e.g. "
                   "chain_sum:min_terms=4,max_terms=5 (tasks bitjax writes worked solutions for: see --solutions)")
    p.add_argument("--split", default="train", choices=["train", "heldout"])
    p.add_argument("--count", type=int, required=True, help="problems to write")
    p.add_argument("--solutions", default="worked", choices=["worked", "direct"],
                   help="worked: step by step, ending in `Answer: X` (default); direct: `Answer: X` alone")
    p.add_argument("--out", required=True, help="the JSONL file to write (refused if it exists)")


def run(args) -> int:
    import json
    from pathlib import Path

    from bitjax.errors import ConfigError
    from bitjax.tasks import problems, prompts, spec, worked

    at_least(args.count, 1, "--count", "the number of problems")
    task = spec.parse(args.task)
    out = Path(args.out)
    if out.exists():
        raise ConfigError(f"--out {out} exists; pass a new path (bitjax never overwrites a problems file)")
    write = worked.solution if args.solutions == "worked" else (lambda _task, p: worked.direct(p))
    records = [{"id": p.prompt_id, "prompt_id": p.prompt_id, "task": str(task), "question": p.question,
                "gold": p.gold, "prompt": prompts.chat_prompt(p), "completion": write(task, p)}
               for p in problems.problems(task, args.split, args.count)]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    tmp.replace(out)   # whole or not at all
    print(f"{out}: {len(records)} {args.split} problems of {task} with {args.solutions} solutions")
    return 0
