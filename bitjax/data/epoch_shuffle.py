"""Shuffling a small source: a fresh permutation of its n elements every pass, computed once per pass.

Grain's `MapDataset.shuffle` permutes an index without storing a permutation, by a cipher over a fixed bit
width with cycle-walking, so each element costs about 2^15 / n rounds: 14 ms per element at n = 2, 38 us at
n = 1024 (measured here). A small repeating source (a three-document rephrased sample, a few cached sequences
per data shard) would spend most of a step shuffling. For n below `SMALL`, `shuffle` stores the permutation
of the current pass instead (n integers); larger sources keep Grain's, which needs no memory. Either way each
pass reads every element once, in an order fixed by the seed and the pass number.
"""

from __future__ import annotations

import grain
import numpy as np

SMALL = 4096   # below this many elements a stored permutation is cheaper than Grain's per-element cipher


class _EpochPermutation(grain.MapDataset):
    def __init__(self, parent: grain.MapDataset, seed: int):
        super().__init__(parent)
        self._seed = seed
        self._pass = (-1, np.zeros(0, np.int64))   # (pass number, its permutation): one object, so that Grain's
                                                    # read threads never see a pass with another pass's order

    def __len__(self) -> int:
        return len(self._parent)

    def __str__(self) -> str:
        return f"EpochPermutation(seed={self._seed})"

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        n = len(self._parent)
        epoch, within = divmod(int(index), n)
        cached_epoch, order = self._pass
        if cached_epoch != epoch:
            order = np.random.default_rng([self._seed, epoch]).permutation(n)
            self._pass = (epoch, order)
        return self._parent[int(order[within]) + epoch * n]


def shuffle(ds: grain.MapDataset, seed: int) -> grain.MapDataset:
    """`ds` shuffled anew every pass (apply before `repeat`, like Grain's shuffle)."""
    if len(ds) < SMALL:
        return _EpochPermutation(ds, seed)
    return ds.seed(seed).shuffle()
