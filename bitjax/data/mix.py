"""Mixing named sources with weights, a clear stop for a source that runs dry, per-source token counts.

Sources are mixed after packing, sequence by sequence, with Grain's `IterDataset.mix`: its choice of
source for sequence k is a deterministic function of k and the weights, so the realized mix matches the
weights to within one sequence per period, and its state is keyed by source name. Restoring a checkpoint
with new weights therefore works: each source resumes where it stopped and the mix continues with the new
proportions from the same sequence index. Each packed sequence comes from one source, so the `source_id`
it carries gives exact per-source token counts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import grain
import numpy as np

from bitjax.data import schema
from bitjax.errors import ConfigError, DataError


def normalize_weights(weights: Mapping[str, float]) -> dict[str, float]:
    """Weights as fractions summing to 1; zero-weight sources are left out. Negative or all zero is an error."""
    for name, w in weights.items():
        if not (isinstance(w, (int, float)) and math.isfinite(w) and w >= 0):
            raise ConfigError(f"data source {name!r} has weight {w}; weights must be finite and >= 0")
    total = sum(weights.values())
    if total <= 0:
        raise ConfigError(f"data source weights {dict(weights)} are all zero; give at least one a positive weight")
    return {name: w / total for name, w in weights.items() if w > 0}


class _RaiseWhenDryIterator(grain.DatasetIterator):
    def __init__(self, parent: grain.DatasetIterator, name: str, n_docs: int | None):
        super().__init__(parent)
        self._name, self._n_docs = name, n_docs

    def __next__(self):
        try:
            return next(self._parent)
        except StopIteration:
            count = "" if self._n_docs is None else f"{self._n_docs} "   # None: a streamed source, uncounted
            raise DataError(
                f"data source {self._name!r} ran dry after one pass over its {count}documents; "
                "set data.on_exhausted=repeat to start another epoch, add data, or train for fewer steps") from None

    def get_state(self):
        return self._parent.get_state()

    def set_state(self, state):
        self._parent.set_state(state)


class RaiseWhenDry(grain.IterDataset):
    """Turns the end of a finite source into a DataError naming it (instead of silently ending the mix)."""

    def __init__(self, parent: grain.IterDataset, name: str, n_docs: int | None):
        super().__init__(parent)
        self._name, self._n_docs = name, n_docs

    def __iter__(self):
        return _RaiseWhenDryIterator(self._parent.__iter__(), self._name, self._n_docs)


def tag_source(ds: grain.IterDataset, source_id: int) -> grain.IterDataset:
    """Add the scalar `source_id` to every packed sequence of one source."""
    tag = np.int32(source_id)
    return ds.map(lambda ex: {**ex, schema.SOURCE_FIELD: tag})


def add_empty_teacher(ds: grain.IterDataset, seq_len: int, k: int, vocab_size: int,
                      logprob_dtype: str) -> grain.IterDataset:
    """Give rows without a teacher (CE, trace rows) the teacher fields of distilled rows, as zeros, so every
    source has one row schema and rows of all sources can share a batch; the loss ignores them there."""
    empty = schema.empty_teacher_fields(seq_len, k, vocab_size, logprob_dtype)
    return ds.map(lambda ex: {**ex, **empty})


def mix(packed: Mapping[str, grain.IterDataset], weights: Mapping[str, float]) -> grain.IterDataset:
    """One stream of packed sequences drawn from the named sources in the given proportions."""
    names = list(weights)
    if len(names) == 1:
        return packed[names[0]]
    # Grain orders a mapping of datasets by key, so the weights go in as a mapping too (not a list in
    # insertion order, which would give source A the weight of source B).
    return grain.IterDataset.mix({n: packed[n] for n in names}, {n: weights[n] for n in names})


def token_counts(source_id_B: np.ndarray, segment_ids_BL: np.ndarray, names: list[str]) -> dict[str, int]:
    """Non-padding tokens per source in one batch."""
    per_row = (np.asarray(segment_ids_BL) > 0).sum(axis=-1)
    totals = np.bincount(np.asarray(source_id_B), weights=per_row, minlength=len(names))
    return {name: int(totals[i]) for i, name in enumerate(names)}
