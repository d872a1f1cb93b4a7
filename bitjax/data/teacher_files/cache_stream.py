"""A "kd" source whose teacher cache is used up continues with its text under CE (on_cache_exhausted = "ce").

The cache holds the first n sequences the source streams (`Pipeline.source_examples`: one stream, shuffled
and packed as training reads it). Data shard j of S reads its cached sequences once (records j, j + S, ...
of the cache, shuffled), then goes on with sequences n + j, n + j + S, ... of that same stream: the source's
text after the cached sequences, dealt round the data shards, so the S shards together read each of those
sequences once, in stream order. These rows are tagged as the source `<name>.ce` (objective "ce") and carry
empty teacher fields: no KD term, plain CE. The text continues as data.on_exhausted says: another epoch of the
source's documents (whose first sequences are the cached ones, now read under CE), or a stop.

The iterator's state holds both parts and which one is being read, so a checkpoint taken before, at or after
the switch resumes exactly.
"""

from __future__ import annotations

import grain


class CacheThenText(grain.IterDataset):
    """The cached rows (or None: this data shard got none) until they run out, then the text rows."""

    def __init__(self, cached: grain.IterDataset | None, text: grain.IterDataset):
        super().__init__([p for p in (cached, text) if p is not None])
        self._cached, self._text = cached, text

    def __iter__(self) -> grain.DatasetIterator:
        return _CacheThenTextIterator(None if self._cached is None else iter(self._cached), iter(self._text))

    def __str__(self) -> str:
        return "CacheThenText"


class _CacheThenTextIterator(grain.DatasetIterator):
    def __init__(self, cached: grain.DatasetIterator | None, text: grain.DatasetIterator):
        super().__init__([p for p in (cached, text) if p is not None])
        self._cached, self._text = cached, text
        self._in_text = cached is None

    def __next__(self):
        if not self._in_text:
            try:
                return next(self._cached)
            except StopIteration:
                self._in_text = True
        return next(self._text)

    def get_state(self) -> dict:
        return {"in_text": self._in_text, "cached": None if self._cached is None else self._cached.get_state(),
                "text": self._text.get_state()}

    def set_state(self, state: dict) -> None:
        self._in_text = bool(state["in_text"])
        if self._cached is not None:
            self._cached.set_state(state["cached"])
        self._text.set_state(state["text"])


class EveryNth(grain.IterDataset):
    """Elements start, start + step, start + 2 * step, ... of the parent stream (one data shard's share)."""

    def __init__(self, parent: grain.IterDataset, start: int, step: int):
        super().__init__(parent)
        self._start, self._step = start, step

    def __iter__(self) -> grain.DatasetIterator:
        return _EveryNthIterator(iter(self._parent), self._start, self._step)

    def __str__(self) -> str:
        return f"EveryNth(start={self._start}, step={self._step})"


class _EveryNthIterator(grain.DatasetIterator):
    def __init__(self, parent: grain.DatasetIterator, start: int, step: int):
        super().__init__(parent)
        self._start, self._step = start, step
        self._started = False

    def __next__(self):
        # the elements passed over are packed but never read by this shard (another shard reads them);
        # the first call passes over the cached sequences too, once
        for _ in range(self._step - 1 if self._started else self._start):
            next(self._parent)
        self._started = True
        return next(self._parent)

    def get_state(self) -> dict:
        return {"parent": self._parent.get_state(), "started": self._started}

    def set_state(self, state: dict) -> None:
        self._parent.set_state(state["parent"])
        self._started = bool(state["started"])
