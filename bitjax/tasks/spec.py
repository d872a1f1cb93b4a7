"""Task specs: which problems a command asks, written once and parsed here for every caller.

    chain_sum                          a reasoning-gym task by name, with its default difficulty
    chain_sum:min_terms=4,max_terms=5  ... with keyword arguments of its config (values are JSON: 4, 0.5, "x")
    jsonl:PATH                         a user's problems, one JSON object a line: {"question", "answer"}

reasoning-gym (`reasoning_gym.factory.DATASETS`) names 100-odd procedurally generated tasks, each with its
own `score_answer`; a JSONL problem's answer is checked with math-verify (bitjax.tasks.answers).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from pathlib import Path
from typing import Any

from bitjax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    name: str                             # a reasoning-gym task, or "jsonl"
    kwargs: tuple[tuple[str, Any], ...]   # the task's config, as given
    path: str = ""                        # the problems file of a "jsonl" task
    text: str = ""                        # the spec as written, for records and messages

    @property
    def is_file(self) -> bool:
        return self.name == "jsonl"

    def __str__(self) -> str:
        return self.text


def parse(spec: str, what: str = "--task") -> TaskSpec:
    """A TaskSpec, checked: the task exists and takes these keyword arguments (one-line ConfigError)."""
    name, _, rest = str(spec).partition(":")
    if name == "jsonl":
        if not rest or not Path(rest).is_file():
            raise ConfigError(f"{what} {spec}: no problems file {rest or '(none given)'}; pass jsonl:PATH to a JSONL "
                              "file of {\"question\": ..., \"answer\": ...} lines")
        return TaskSpec("jsonl", (), rest, str(spec))
    kwargs = _kwargs(rest, spec, what)
    registry = _registry()
    if name not in registry:
        close = difflib.get_close_matches(name, registry, n=3)
        raise ConfigError(f"{what} {spec}: no reasoning-gym task {name!r}" + (
            f"; did you mean {', '.join(close)}?" if close else "; see reasoning_gym.factory.DATASETS for the names"))
    task = TaskSpec(name, tuple(sorted(kwargs.items())), "", str(spec))
    dataset(task, size=1)   # a keyword the task's config lacks, or a value it refuses, fails here
    return task


def _kwargs(text: str, spec: str, what: str) -> dict[str, Any]:
    out = {}
    for item in filter(None, (x.strip() for x in text.split(","))):
        key, sep, raw = item.partition("=")
        if not sep or not key.isidentifier():
            raise ConfigError(f"{what} {spec}: {item!r} is not KEY=VALUE; write e.g. chain_sum:min_terms=4,max_terms=5")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw   # a bare word: a string
    return out


def _registry() -> dict:
    try:
        from reasoning_gym.factory import DATASETS
    except ImportError:
        raise ConfigError("reasoning-gym is missing; install it with `pip install -e '.[traces]'`") from None
    return DATASETS


def dataset(task: TaskSpec, size: int, seed: int = 0):
    """The reasoning-gym dataset of a task (its items, its `score_answer`); a bad config is a ConfigError."""
    import reasoning_gym

    try:
        return reasoning_gym.create_dataset(task.name, size=size, seed=seed, **dict(task.kwargs))
    except TypeError as e:   # a keyword its config does not take
        fields = [f.name for f in dataclasses.fields(_registry()[task.name][1])
                  if f.name not in ("seed", "size")]
        raise ConfigError(f"--task {task.text}: {e}; {task.name} takes {', '.join(fields)}") from None
    except (AssertionError, ValueError) as e:   # reasoning-gym validates its configs with asserts
        raise ConfigError(f"--task {task.text}: {e or 'the task refuses these settings'}") from None
