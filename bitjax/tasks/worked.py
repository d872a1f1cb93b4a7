"""Worked solutions: a problem solved step by step and ending in `Answer: <answer>`, to train a teacher on.

The field makes small reasoning teachers by supervised fine-tuning on verified worked solutions of procedural
problems. Where a task carries its own (reasoning-gym's `answer_cot`, gsm_symbolic) it is used as written;
for chain_sum the steps are generated here, one running total per operator:

    0 - 4 - 8 - 7 + 6 =   ->   0 - 4 = -4. -4 - 8 = -12. -12 - 7 = -19. -19 + 6 = -13. Answer: -13

Every solution written is checked by the task's own verifier before it is returned (bitjax.tasks.answers).
"""

from __future__ import annotations

from bitjax.errors import ConfigError
from bitjax.tasks.answers import is_correct
from bitjax.tasks.problems import Problem
from bitjax.tasks.spec import TaskSpec


def chain_sum(problem: Problem) -> str:
    tokens = problem.entry["metadata"]["expression"].split()
    total = int(tokens[0])
    steps = []
    for op, operand in zip(tokens[1::2], tokens[2::2]):
        new = total + int(operand) if op == "+" else total - int(operand)
        steps.append(f"{total} {op} {operand} = {new}.")
        total = new
    return " ".join(steps + [f"Answer: {total}"])


def task_cot(problem: Problem) -> str:
    return f"{problem.entry['metadata']['answer_cot'].strip()}\nAnswer: {problem.gold}"


SOLVERS = {"chain_sum": chain_sum, "gsm_symbolic": task_cot}


def solution(task: TaskSpec, problem: Problem) -> str:
    """The worked solution of `problem`, verified; ConfigError for a task with no solver."""
    solver = SOLVERS.get(task.name)
    if solver is None:
        raise ConfigError(f"--task {task.text}: bitjax writes worked solutions for {', '.join(SOLVERS)}; sample "
                          "traces from a teacher that solves this task instead (bitjax traces)")
    text = solver(problem)
    if not is_correct(task, problem, text):
        raise AssertionError(f"the worked solution of {problem.prompt_id} does not verify: {text!r}")
    return text


def direct(problem: Problem) -> str:
    """The answer alone, no steps: what a student learns from question + final answer only."""
    return f"Answer: {problem.gold}"
