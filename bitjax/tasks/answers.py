"""A completion's final answer, and whether it is right: the task's own `score_answer`, or math-verify.

Models are asked to end with `Answer: <answer>` (bitjax.tasks.prompts); the answer is what follows the last
`Answer:` on its line. A chat model that states it its own way is read as the field's flexible extractors do:
failing `Answer:`, the last `\\boxed{...}`, then the last "the answer is X" (never a bare last number).
A reasoning-gym task scores the answer with its own `score_answer` (full marks count as right); a JSONL
problem's answer is compared with its gold answer by math-verify (LaTeX, \\boxed{}, fractions, equivalent
numbers), so no hand-written number parser decides correctness.
"""

from __future__ import annotations

import functools
import re

from bitjax.errors import ConfigError
from bitjax.tasks.problems import Problem
from bitjax.tasks.spec import TaskSpec, dataset

_STATED = (re.compile(r"Answer:[ \t]*([^\n]*)", re.IGNORECASE),
           re.compile(r"\\boxed\{([^{}\n]*)\}"),
           re.compile(r"answer is:?[ \t]*\**[ \t]*([^\n]*?)\**[ \t]*(?:\.[ \t]*)?$", re.IGNORECASE | re.MULTILINE))


def final_answer(completion: str) -> str | None:
    """The answer a completion states (trailing period dropped), or None if it states none."""
    for pattern in _STATED:
        found = [a.strip().removesuffix(".").strip() for a in pattern.findall(completion)]
        found = [a for a in found if a]
        if found:
            return found[-1]
    return None


def is_correct(task: TaskSpec, problem: Problem, completion: str) -> bool:
    """The task's verdict on a completion's final answer (no answer: wrong)."""
    answer = final_answer(completion)
    if answer is None:
        return False
    if task.is_file:
        try:
            from math_verify import parse, verify
        except ImportError:
            raise ConfigError("math-verify is missing (it checks a problems file's answers); install it with "
                              "`pip install -e '.[traces]'`") from None
        return bool(verify(parse(problem.gold), parse(answer)))
    return _scorer(task)(answer, problem.entry) >= 1.0


@functools.lru_cache(maxsize=16)
def _scorer(task: TaskSpec):
    return dataset(task, size=1).score_answer
