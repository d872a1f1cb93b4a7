"""A completion's final answer, and whether it is right: the task's own `score_answer`, or math-verify.

Models are asked to end with `Answer: <answer>` (bitjax.tasks.prompts); the answer is what follows the last
`Answer:` on its line. A reasoning-gym task scores it with its own `score_answer` (full marks count as right);
a JSONL problem's answer is compared with its gold answer by math-verify (LaTeX, \\boxed{}, fractions,
equivalent numbers), so no hand-written number parser decides correctness.
"""

from __future__ import annotations

import functools
import re

from bitjax.errors import ConfigError
from bitjax.tasks.problems import Problem
from bitjax.tasks.spec import TaskSpec, dataset

_ANSWER = re.compile(r"Answer:[ \t]*([^\n]*)")


def final_answer(completion: str) -> str | None:
    """What follows the last `Answer:` on its line (trailing period dropped), or None if the text states none."""
    found = _ANSWER.findall(completion)
    if not found:
        return None
    answer = found[-1].strip().removesuffix(".").strip()
    return answer or None


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
