"""A run's metrics log (`metrics.jsonl`, one JSON object per logged step), read back.

The trainer appends it (bitjax.training.outputs.RunLogger); the loss curve, the model card, the tests and
the benchmarks read it here.
"""

from __future__ import annotations

import json

from etils import epath


def read_history(path: epath.Path) -> list[dict]:
    """Parse metrics.jsonl, skipping a final line cut short by a killed process."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def loss_series(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    """Steps and values of `key`, the latest record winning where a resumed run logged a step again."""
    by_step = {r["step"]: r[key] for r in records if key in r}
    steps = sorted(by_step)
    return steps, [by_step[s] for s in steps]
