"""Shuffling small sources: every pass a permutation, fixed by seed and pass, and cheap at any size."""

import time

import grain

from bitjax.data import epoch_shuffle


def _passes(ds, n, passes):
    return [[ds[p * n + i] for i in range(n)] for p in range(passes)]


def test_every_pass_reads_each_element_once_in_an_order_of_its_own():
    source = grain.MapDataset.range(100)[3::7]                    # 14 elements: 3, 10, ..., 94
    n = len(source)
    passes = _passes(epoch_shuffle.shuffle(source, seed=5).repeat(None), n, 4)
    for p in passes:
        assert sorted(p) == list(range(3, 100, 7))
    assert len({tuple(p) for p in passes}) == 4                   # a new order every pass
    again = _passes(epoch_shuffle.shuffle(source, seed=5).repeat(None), n, 4)
    assert again == passes                                        # fixed by the seed (resume reads the same)
    assert _passes(epoch_shuffle.shuffle(source, seed=6).repeat(None), n, 4) != passes


def test_a_two_element_source_is_cheap_to_shuffle():
    grain_shuffled = grain.MapDataset.range(2).seed(0).shuffle().repeat(None)
    ours = epoch_shuffle.shuffle(grain.MapDataset.range(2), seed=0).repeat(None)
    seconds = {}
    for name, ds in (("grain", grain_shuffled), ("ours", ours)):
        start = time.perf_counter()
        for i in range(200):
            ds[i]
        seconds[name] = time.perf_counter() - start
    # measured 14 ms vs 10 us per element: a ratio, so a loaded machine slows both alike
    assert seconds["ours"] * 20 < seconds["grain"], seconds


def test_large_sources_keep_grains_shuffle():
    ds = epoch_shuffle.shuffle(grain.MapDataset.range(epoch_shuffle.SMALL), seed=1)
    assert ds[0] == grain.MapDataset.range(epoch_shuffle.SMALL).seed(1).shuffle()[0]
    assert sorted(ds[i] for i in range(len(ds))) == list(range(epoch_shuffle.SMALL))
    assert [ds[i] for i in range(50)] != list(range(50))         # not the identity
