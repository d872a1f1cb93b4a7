"""Data shards: the global batch stream as a fixed number of shards, read by however many processes there are.

The training stream is cut into `num_shards` shards fixed when a run starts (by default one per process):
shard j reads documents j, j + num_shards, ... of every source and yields B / num_shards rows per step.
Process p of P reads the contiguous group of shards p * S/P ... (p + 1) * S/P - 1 and concatenates their rows,
which are exactly its rows of the global batch. The iterator state is kept per shard, so a checkpoint
written by P processes restores into any process count that divides the shard count (8 hosts -> 4, 2 -> 1)
and the global batches continue unchanged.
"""

from __future__ import annotations

import json
from typing import Callable

import grain
import numpy as np
from etils import epath

from bitjax.errors import ConfigError


def check_shards(num_shards: int, process_count: int, batch_size: int) -> None:
    if num_shards % process_count:
        raise ConfigError(
            f"{num_shards} data shards cannot be split over {process_count} processes; run with a process count "
            f"dividing {num_shards}, or start a new run with --set data.num_shards={process_count}")
    if batch_size % num_shards:
        raise ConfigError(
            f"data.batch_size={batch_size} is not divisible by {num_shards} data shards; use a multiple of "
            f"{num_shards}, e.g. --set data.batch_size={num_shards * max(1, batch_size // num_shards)}")


def owned_shards(process_index: int, process_count: int, num_shards: int) -> range:
    per_process = num_shards // process_count
    return range(process_index * per_process, (process_index + 1) * per_process)


class ShardGroupIterator(grain.DatasetIterator):
    """This process's rows of every global batch: its shards' batches, concatenated in shard order."""

    def __init__(self, make_shard: Callable[[int], grain.IterDataset], shards: range, num_shards: int):
        self._shards = list(shards)
        self._num_shards = num_shards
        self._closed = True   # until built: if a shard's pipeline raises, the finalizer has nothing to close
        super().__init__([iter(make_shard(j)) for j in self._shards])

    def __next__(self) -> dict[str, np.ndarray]:
        parts = [next(it) for it in self._parents]
        if len(parts) == 1:
            return parts[0]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def get_state(self) -> dict:
        return {"num_shards": self._num_shards,
                "shards": {str(j): it.get_state() for j, it in zip(self._shards, self._parents)}}

    def set_state(self, state: dict) -> None:
        """Accepts this iterator's own state, or the union of every process's (see `merge_states`)."""
        if state.get("num_shards") != self._num_shards:
            raise ConfigError(f"the saved data position has {state.get('num_shards')} shards, this run reads "
                              f"{self._num_shards}; resume with the saved shard count")
        for j, it in zip(self._shards, self._parents):
            it.set_state(with_types_of(it.get_state(), state["shards"][str(j)]))


def with_types_of(template, saved):
    """`saved` (a state read back from JSON) with the containers of `template` (the live iterator's own state).

    JSON has no tuple: a state Grain built with tuples comes back with lists, and Grain compares some of them
    with tuples (ConcatThenSplit's "no remainder" slice is `(-1, -1)`, and `[-1, -1] != (-1, -1)`), so an
    untyped restore silently changes the data stream. The iterator's current state has the same structure
    and Grain's own types, so each list is turned back into a tuple where the template holds one.
    """
    if isinstance(saved, dict) and isinstance(template, dict):
        return {k: with_types_of(template[k], v) if k in template else v for k, v in saved.items()}
    if isinstance(saved, (list, tuple)) and isinstance(template, (list, tuple)):
        if len(template) == len(saved):
            items = [with_types_of(t, v) for t, v in zip(template, saved)]
        else:  # a variable-length sequence: its items share the first item's types
            items = [with_types_of(template[0], v) for v in saved] if template else list(saved)
        return tuple(items) if isinstance(template, tuple) else items
    return saved


def merge_states(data_dir: epath.Path) -> dict:
    """The union of the per-process iterator states Grain wrote into a checkpoint's data directory."""
    files = sorted(epath.Path(data_dir).glob("process_*-of-*.json"))
    if not files:
        raise ConfigError(f"{data_dir} holds no data-iterator state; the checkpoint is incomplete, "
                          "resume from an earlier step")
    merged: dict = {"num_shards": None, "shards": {}}
    for path in files:
        state = json.loads(path.read_text())
        if "num_shards" not in state:
            raise ConfigError(f"{path} is not a bitjax data-shard state; it was written by another version")
        merged["num_shards"] = state["num_shards"]
        merged["shards"].update(state["shards"])
    missing = set(map(str, range(merged["num_shards"]))) - set(merged["shards"])
    if missing:
        raise ConfigError(f"{data_dir} lacks the state of data shard(s) {sorted(missing, key=int)}; "
                          "copy every process_*.json of that checkpoint")
    return merged


def saved_num_shards(data_dir: epath.Path) -> int | None:
    """The shard count a checkpoint was written with (None when it holds no data state)."""
    files = sorted(epath.Path(data_dir).glob("process_*-of-*.json"))
    return json.loads(files[0].read_text()).get("num_shards") if files else None
