"""How many held-out problems a trained run solves: greedy pass@1, and with sampling pass@k and maj@k.

    model = run_chat_model(Run("runs/student"))        # or GGUFChatModel("student.gguf"): the export in llama.cpp
    report = task_accuracy(model, "chain_sum:min_terms=4,max_terms=5", n_problems=100, samples=8,
                           max_new_tokens=64, answers=Path("answers.jsonl"))
    # {"task": ..., "problems": 100, "correct": 61, "pass@1": 0.61, "pass@8": 0.83, "maj@8": 0.66, ...}

Each problem is one user message (bitjax.tasks.prompts) in the model's chat template, answered in batches with
a key/value cache (bitjax.run.chat) or by llama.cpp (bitjax.evaluation.gguf_chat); its final answer is judged
by the task's own verifier (bitjax.tasks.answers).
  pass@1   the greedy answer is right
  pass@k   at least one of k sampled answers is right (k samples drawn per problem, so the estimate is exact)
  maj@k    the most frequent final answer of the k samples is right (ties: the one stated first)
Every completion is written to `answers` (RUN_DIR/answers.jsonl for `bitjax eval`), a line per problem.
"""

from __future__ import annotations

import collections
import json
from pathlib import Path

from bitjax.tasks import prompts as task_prompts
from bitjax.tasks import spec as task_spec
from bitjax.tasks.answers import final_answer, is_correct
from bitjax.tasks.problems import Problem, problems, sample_seed
from bitjax.tasks.spec import TaskSpec


def task_accuracy(model, task: TaskSpec | str, *, n_problems: int, max_new_tokens: int, answers: Path | None,
                  samples: int = 1, temperature: float = 0.7, top_p: float = 0.95, seed: int = 0) -> dict:
    """Accuracy on the first `n_problems` held-out problems of `task`."""
    task = task_spec.parse(task) if isinstance(task, str) else task
    return problems_accuracy(model, [(task, p) for p in problems(task, "heldout", n_problems)],
                             max_new_tokens=max_new_tokens, answers=answers, samples=samples,
                             temperature=temperature, top_p=top_p, seed=seed, name=str(task))


def problems_accuracy(model, items: list[tuple[TaskSpec, Problem]], *, max_new_tokens: int, answers: Path | None,
                      samples: int = 1, temperature: float = 0.7, top_p: float = 0.95, seed: int = 0,
                      name: str = "", prompts: list[str] | None = None) -> dict:
    """Accuracy on (task, problem) pairs, each judged by its own task's verifier; `prompts` (default: each
    problem's user message in the model's chat template) are the exact texts the model continues."""
    rendered = prompts or [model.render([{"role": "user", "content": task_prompts.user_message(p)}])
                           for _, p in items]
    greedy = model.complete_many(rendered, max_new_tokens=max_new_tokens, temperature=0.0, top_p=1.0,
                                 seeds=[0] * len(items))
    right = [is_correct(task, p, c.text) for (task, p), c in zip(items, greedy)]
    n = len(items)
    report = {"task": name, "problems": n, "correct": sum(right), "pass@1": sum(right) / n}
    sampled = [[] for _ in items]
    if samples > 1:
        rows = [(i, s) for i in range(n) for s in range(samples)]
        done = model.complete_many([rendered[i] for i, _ in rows], max_new_tokens=max_new_tokens,
                                   temperature=temperature, top_p=top_p,
                                   seeds=[sample_seed(seed, items[i][1].prompt_id, s) for i, s in rows])
        for (i, _), c in zip(rows, done):
            sampled[i].append(c.text)
        passed = [any(is_correct(t, p, text) for text in texts) for (t, p), texts in zip(items, sampled)]
        majority = [_majority_right(t, p, texts) for (t, p), texts in zip(items, sampled)]
        report.update({f"pass@{samples}": sum(passed) / n, f"maj@{samples}": sum(majority) / n,
                       "temperature": temperature, "top_p": top_p})
    if answers is None:   # not this process's to write (training's eval on every host)
        return report
    with Path(answers).open("w", encoding="utf-8") as f:
        for (task, p), c, ok, texts in zip(items, greedy, right, sampled):
            f.write(json.dumps({"prompt_id": p.prompt_id, "task": str(task), "gold": p.gold,
                                "answer": final_answer(c.text), "correct": ok, "completion": c.text,
                                **({"samples": texts} if texts else {})}, ensure_ascii=False) + "\n")
    report["answers"] = str(answers)
    return report


def _majority_right(task: TaskSpec, problem: Problem, texts: list[str]) -> bool:
    stated = [a for a in map(final_answer, texts) if a is not None]
    if not stated:
        return False
    top = max(collections.Counter(stated).items(), key=lambda kv: (kv[1], -stated.index(kv[0])))[0]
    return is_correct(task, problem, f"Answer: {top}")
