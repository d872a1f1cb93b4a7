"""A "kd" source that wants more than its teacher cache holds: on_cache_exhausted="repeat" reads the cached
sequences again, "ce" goes on with the source's text after them under plain CE
(bitjax.data.teacher_files.cache_stream)."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bitjax.config import SourceConfig, apply_overrides, load_recipe
from bitjax.data import build_pipeline
from bitjax.data.schema import SEQUENCE_FIELDS
from bitjax.data.teacher_files.topk_cache import CacheSpec, TopKCache
from bitjax.data.teacher_files.topk_cache_writer import write_cache
from bitjax.errors import ConfigError
from bitjax.losses import objectives, reference
from tests.support import KD_TINY

N_CACHED, SHARDS, K = 10, 2, 4
TEACHER_FIELDS = ("teacher_ids", "teacher_logprobs", "teacher_tail")


def _cfg(choice: str, cache: str = "unread", *extra):
    """kd_tiny reading its natural source alone, one row per data shard per batch."""
    cfg = apply_overrides(load_recipe(KD_TINY), ["data.seq_len=32", f"data.batch_size={SHARDS}",
                                                 "data.weights=natural=1,rephrased=0", f"distill.cache={cache}",
                                                 *extra])
    sources = tuple(dataclasses.replace(s, on_cache_exhausted=choice) for s in cfg.data.sources)
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, sources=sources))


def _teacher(tokens_1n):
    """A teacher whose top-k depends on the document prefix (so every cached row differs)."""
    n = tokens_1n.shape[1]
    rng = np.random.default_rng(int(tokens_1n.sum()))
    logp = np.log(np.full((1, n, K), 0.1)) - rng.random((1, n, K))
    return rng.integers(0, 2000, (1, n, K)), np.sort(logp)[..., ::-1], np.log1p(-np.exp(logp).sum(-1))


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory):
    """The first N_CACHED sequences of the natural source, as `bitjax cache-teacher` caches them."""
    root = tmp_path_factory.mktemp("cache")
    pipeline = build_pipeline(_cfg("ce").data, text_only=True)
    spec = CacheSpec("test:prefix", pipeline.tokenizer_fingerprint, pipeline.vocab_size, K, 32)
    write_cache(root / "natural", spec, pipeline.source_examples("natural"), _teacher, n_examples=N_CACHED,
                num_shards=3, progress=False)
    return root


def _rows(pipeline, shard: int, n: int) -> list[dict]:
    it = iter(pipeline.train_dataset(shard, SHARDS))
    return [{k: v[0] for k, v in next(it).items()} for _ in range(n)]


def _same_row(a: dict, b: dict, fields=SEQUENCE_FIELDS) -> bool:
    return all(np.array_equal(a[f], b[f]) for f in fields)


def test_repeat_reads_the_cached_sequences_again(cache_root):
    cfg = _cfg("repeat", str(cache_root))
    pipeline = build_pipeline(cfg.data, teacher_cache=str(cache_root), vocab_size=cfg.model.vocab_size)
    assert pipeline.source_names == ["natural", "rephrased"]          # no `.ce` rows with "repeat"
    cache = TopKCache(cache_root / "natural")
    for shard in range(SHARDS):
        mine = [cache[i] for i in range(shard, N_CACHED, SHARDS)]     # this data shard's cached records
        rows = _rows(pipeline, shard, 3 * len(mine))
        for epoch in range(3):                                        # each pass: every record once
            part = rows[epoch * len(mine):(epoch + 1) * len(mine)]
            for record in mine:
                match = [r for r in part if _same_row(r, record)]
                assert len(match) == 1
                for f in TEACHER_FIELDS:
                    np.testing.assert_array_equal(match[0][f], record[f])
        assert all(int(r["source_id"]) == 0 for r in rows)


def test_ce_goes_on_with_the_text_after_the_cache_without_the_teacher(cache_root):
    """Shard j reads its cached records once, then sequences N + j, N + j + S, ... of the source's stream (the
    one the cache was written from): the text after the cache, each sequence read by one shard, as source
    `natural.ce` with empty teacher fields."""
    cfg = _cfg("ce", str(cache_root))
    pipeline = build_pipeline(cfg.data, teacher_cache=str(cache_root), vocab_size=cfg.model.vocab_size)
    assert pipeline.source_names == ["natural", "rephrased", "natural.ce", "rephrased.ce"]
    stream = pipeline.source_examples("natural")
    sequences = [next(stream) for _ in range(N_CACHED + 12)]
    cache = TopKCache(cache_root / "natural")
    for shard in range(SHARDS):
        mine = [cache[i] for i in range(shard, N_CACHED, SHARDS)]
        rows = _rows(pipeline, shard, len(mine) + 6)
        cached, text = rows[:len(mine)], rows[len(mine):]
        assert all(int(r["source_id"]) == 0 for r in cached)
        for record in mine:
            assert sum(_same_row(r, record) for r in cached) == 1
        for i, row in enumerate(text):
            assert _same_row(row, sequences[N_CACHED + shard + SHARDS * i]), (shard, i)
            assert int(row["source_id"]) == 2                             # natural.ce
            assert all(not np.any(row[f]) for f in TEACHER_FIELDS)        # no teacher behind these rows


def test_ce_rows_are_trained_with_ce_alone():
    """The `.ce` rows count as a "ce" source: their teacher fields do not reach the loss (KD off), their CE
    does, and the cached rows keep w * KD + (1 - w) * CE."""
    cfg = _cfg("ce", "unread", "distill.kd_weight=0.75")
    table = objectives.SourceObjectives.from_config(cfg)
    assert table.names == ("natural", "rephrased", "natural.ce", "rephrased.ce")
    assert table.objectives == ("kd", "kd", "ce", "ce")
    rng = np.random.default_rng(0)
    B, L, V = 4, 8, 16
    ids = np.argsort(rng.random((B, L, V)), axis=-1)[..., :K].astype(np.int32)
    logp = np.sort(np.log(rng.dirichlet(np.ones(V), (B, L)))[..., :K], axis=-1)[..., ::-1]
    batch = {"inputs": rng.integers(0, V, (B, L)), "targets": rng.integers(0, V, (B, L)),
             "segment_ids": np.ones((B, L), np.int32), "positions": np.tile(np.arange(L), (B, 1)),
             "loss_mask": np.ones((B, L), np.int32), "source_id": np.array([0, 0, 2, 2], np.int32),
             "teacher_ids": ids, "teacher_logprobs": logp.astype(np.float32),
             "teacher_tail": np.log1p(-np.exp(logp).sum(-1)).astype(np.float32)}
    logits = jnp.asarray(rng.normal(size=(B, L, V)), jnp.float32)
    loss, parts = reference.batch_loss_from_logits(logits, batch, table, cfg.distill, 10**6)
    other = {**batch, "teacher_ids": ids[::-1].copy(), "teacher_logprobs": logp[::-1].astype(np.float32)}
    other["teacher_ids"][:2], other["teacher_logprobs"][:2] = ids[:2], logp[:2]   # cached rows unchanged
    loss_other, _ = reference.batch_loss_from_logits(logits, other, table, cfg.distill, 10**6)
    np.testing.assert_allclose(float(loss_other), float(loss), rtol=1e-6)      # .ce rows' teacher unread
    ce_rows = -np.take_along_axis(np.asarray(jax.nn.log_softmax(logits)), batch["targets"][..., None], -1)[..., 0]
    np.testing.assert_allclose(float(parts["loss/natural.ce"]), ce_rows[2:].mean(), rtol=1e-5)
    np.testing.assert_allclose(float(parts["loss/natural"]),
                               0.75 * float(parts["kd"]) + 0.25 * ce_rows[:2].mean(), rtol=1e-5)
    np.testing.assert_allclose(float(loss), 0.5 * float(parts["loss/natural"]) + 0.5 * ce_rows[2:].mean(),
                               rtol=1e-5)


@pytest.mark.parametrize("before_switch", [2, 0, -1], ids=["before", "at", "after"])
def test_resume_across_the_switch_is_exact(cache_root, before_switch):
    """A data position saved a few rows before the switch to text, exactly at it, and after it (as a checkpoint
    stores it: JSON) restores into a new iterator that yields the same rows as the first one."""
    cfg = _cfg("ce", str(cache_root))
    pipeline = build_pipeline(cfg.data, teacher_cache=str(cache_root), vocab_size=cfg.model.vocab_size)
    first = pipeline.train_iterator(0, 1, num_shards=SHARDS)
    switch = len(range(0, N_CACHED, SHARDS))          # rows of shard 0's cache (both shards switch by then)
    for _ in range(switch - before_switch):
        next(first)
    saved = json.loads(json.dumps(first.get_state()))
    want = [next(first) for _ in range(6)]
    second = pipeline.train_iterator(0, 1, num_shards=SHARDS)
    second.set_state(saved)
    got = [next(second) for _ in range(6)]
    for a, b in zip(want, got):
        for field in a:
            np.testing.assert_array_equal(a[field], b[field], err_msg=field)
    ids = [tuple(int(s) for s in b["source_id"]) for b in want]
    assert (0, 0) in ids or before_switch <= 0          # cached rows before the switch, text rows after it
    assert ids[-1] == (2, 2)


def test_bad_on_cache_exhausted_is_one_line():
    with pytest.raises(ConfigError, match=r"on_cache_exhausted='again' is not one of repeat, ce") as e:
        SourceConfig("natural", "tfds:shakespeare", objective="kd", on_cache_exhausted="again")
    assert "\n" not in str(e.value)


def test_a_source_named_like_the_text_rows_of_another_is_refused():
    cfg = _cfg("ce")
    clash = SourceConfig("natural.ce", "tfds:shakespeare")
    with pytest.raises(ConfigError, match="duplicate names"):
        dataclasses.replace(cfg.data, sources=cfg.data.sources + (clash,))


def test_resuming_with_another_choice_is_one_line_not_a_damaged_checkpoint(tmp_path):
    """The data position saved with one choice cannot be restored into the other's stream: resuming so is
    refused by name before anything is read (it would otherwise fail like a damaged checkpoint)."""
    from bitjax.training.checkpointer import check_compatible, meta_for

    saved = meta_for(_cfg("repeat"), "tok")
    check_compatible(saved, _cfg("repeat", "unread", "distill.kd_weight=0.5"), "tok", tmp_path)
    with pytest.raises(ConfigError, match=r"other on_cache_exhausted choices \(natural: repeat -> ce; rephrased: "
                                          r"repeat -> ce\)") as e:
        check_compatible(saved, _cfg("ce"), "tok", tmp_path)
    assert "\n" not in str(e.value)
