"""Problems of a task, split into training and held-out problems that never share an item or a template.

A reasoning-gym task generates one stream of items (seed 0); each item goes to the held-out split or the
training split by a hash of its question text, or, for tasks that draw items from templates (gsm_symbolic's
`task_indices`), by its template: one template in HELDOUT_EVERY is held out. So the two splits never hold the
same problem, whatever number of each a command asks for. A JSONL task's file is the split the user gives.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterator

from bitjax.errors import ConfigError
from bitjax.tasks.spec import TaskSpec, dataset

SPLITS = ("train", "heldout")
HELDOUT_EVERY = 5         # one question hash (or template) in five is held out
_CHUNK = 4096             # items generated at a time


@dataclasses.dataclass(frozen=True)
class Problem:
    prompt_id: str        # "<task>/<split>/<index in the task's stream>"
    question: str
    gold: str             # the reference answer, as the task states it
    entry: dict           # what the task's verifier reads (reasoning-gym's item: question, answer, metadata)


def problems(task: TaskSpec, split: str, n: int) -> list[Problem]:
    """The first `n` problems of `split`; fewer only where a JSONL file holds fewer."""
    if split not in SPLITS:
        raise ConfigError(f"--split {split}: use one of {', '.join(SPLITS)}")
    if n < 1:
        raise ConfigError(f"{n} problems asked for; ask for at least one")
    stream = _jsonl(task) if task.is_file else _generated(task, split)
    out = []
    for problem in stream:
        out.append(problem)
        if len(out) == n:
            break
    if not out:
        raise ConfigError(f"--task {task.text}: no {split} problem could be drawn")
    return out


def sample_seed(seed: int, prompt_id: str, sample: int) -> int:
    """The seed of one sampled completion: a hash of (seed, problem, sample index), so a completion is the same
    whichever batch, device or rerun draws it (traces, pass@k)."""
    digest = hashlib.sha256(f"{seed}|{prompt_id}|{sample}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def is_heldout(question: str, template: int | None) -> bool:
    key = str(template) if template is not None else question
    return int(hashlib.sha256(key.encode("utf-8")).hexdigest(), 16) % HELDOUT_EVERY == 0


def _generated(task: TaskSpec, split: str) -> Iterator[Problem]:
    for start in range(0, 1 << 22, _CHUNK):
        ds = dataset(task, size=start + _CHUNK)   # the same seed: the first `start` items are the ones seen before
        templates = getattr(ds, "task_indices", None)
        for index in range(start, start + _CHUNK):
            item = ds[index]
            template = int(templates[index]) if templates is not None else None
            if is_heldout(item["question"], template) == (split == "heldout"):
                yield Problem(f"{task.name}/{split}/{index}", item["question"], str(item["answer"]),
                              _jsonable(item))


def _jsonl(task: TaskSpec) -> Iterator[Problem]:
    with open(task.path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{task.path}:{line_no}: not JSON ({e.msg}); write one JSON object a line") from None
            if not isinstance(record, dict) or "question" not in record or "answer" not in record:
                raise ConfigError(f"{task.path}:{line_no}: a problem needs \"question\" and \"answer\" fields; add "
                                  "the missing one")
            pid = str(record.get("id", line_no))
            yield Problem(f"jsonl/{pid}", str(record["question"]), str(record["answer"]),
                          {"question": record["question"], "answer": str(record["answer"])})


def _jsonable(item: dict) -> dict:
    """An item as JSON keeps it (tuples become lists), so a record can carry it to the verifier."""
    return json.loads(json.dumps(item, default=str))
