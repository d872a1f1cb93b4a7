import json

import numpy as np
import pytest

from bitjax.data.teacher_files.topk_cache import CacheError, CacheSpec, TopKCache, shard_name
from bitjax.data.teacher_files.topk_cache_writer import example_topk, write_cache

V, L, K, EOS = 300, 16, 4, 0
SPEC = CacheSpec(teacher="test:random", tokenizer_fingerprint="abc123", vocab_size=V, k=K, seq_len=L)


def fake_topk(tokens_1n):
    """A teacher whose distribution at position i depends on the document prefix only."""
    row = tokens_1n[0]
    logits = np.stack([np.random.default_rng(int(row[: i + 1].sum()) * 31 + i).normal(size=V) * 3
                       for i in range(len(row))])[None]
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    ids = np.argsort(-logp, axis=-1)[..., :K]
    top = np.take_along_axis(logp, ids, -1)
    tail = np.log1p(-np.exp(top).sum(-1))
    return ids, top, tail


def window_example(window, eos):
    """L + 1 tokens -> one packed example whose documents end with EOS."""
    inputs, targets = window[:-1], window[1:]
    is_eos = inputs == eos
    segment_ids = 1 + np.concatenate([[0], np.cumsum(is_eos)[:-1]])
    starts = np.concatenate([[True], is_eos[:-1]])
    positions = np.arange(len(inputs)) - np.maximum.accumulate(np.where(starts, np.arange(len(inputs)), 0))
    return {"inputs": inputs, "targets": targets, "segment_ids": segment_ids.astype(np.int32),
            "positions": positions.astype(np.int32), "loss_mask": (~is_eos).astype(np.int32)}


def examples(n=10, with_eos=False):
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        window = rng.integers(1, V, L + 1).astype(np.int32)
        if with_eos:
            window[6] = EOS
        out.append(window_example(window, EOS))
    return out


def test_round_trip_exact(tmp_path):
    exs = examples()
    manifest = write_cache(tmp_path, SPEC, exs, fake_topk, num_shards=3, progress=False)
    assert manifest["records"] == 10 and len(manifest["shards"]) == 3
    cache = TopKCache(tmp_path)
    assert len(cache) == 10
    stored = {tuple(cache[i]["inputs"]): cache[i] for i in range(len(cache))}
    for ex in exs:
        rec = stored[tuple(ex["inputs"])]
        for field in ("targets", "segment_ids", "positions", "loss_mask"):
            np.testing.assert_array_equal(rec[field], ex[field])
        ids, top, tail = fake_topk(ex["inputs"][None])
        np.testing.assert_array_equal(rec["teacher_ids"], ids[0])
        # exactly what float16 storage holds
        np.testing.assert_array_equal(rec["teacher_logprobs"], top[0].astype(np.float16).astype(np.float32))
        np.testing.assert_array_equal(rec["teacher_tail"], tail[0].astype(np.float32))
        # rows stay as narrow as stored until the device (bitjax.data.schema)
        assert rec["teacher_ids"].dtype == np.uint16 and rec["teacher_logprobs"].dtype == np.float16


def test_teacher_reads_each_document_alone():
    ex = examples(1, with_eos=True)[0]
    assert ex["segment_ids"].max() == 2
    ids, top, _ = example_topk(fake_topk, ex, K)
    second = ex["segment_ids"] == 2
    alone_ids, alone_top, _ = fake_topk(ex["inputs"][second][None])
    np.testing.assert_array_equal(ids[second], alone_ids[0])
    np.testing.assert_array_equal(top[second], alone_top[0].astype(np.float32))


def test_float32_storage_is_lossless(tmp_path):
    spec = CacheSpec(**{**SPEC.__dict__, "logprob_dtype": "float32"})
    write_cache(tmp_path, spec, examples(2), fake_topk, progress=False)
    rec = TopKCache(tmp_path)[0]
    _, top, _ = fake_topk(rec["inputs"][None])
    np.testing.assert_array_equal(rec["teacher_logprobs"], top[0].astype(np.float32))


def test_resume_skips_finished_and_redoes_half_written(tmp_path):
    exs = examples()
    write_cache(tmp_path, SPEC, exs, fake_topk, num_shards=2, progress=False)
    done = tmp_path / shard_name(0, 2)
    mtime = done.stat().st_mtime_ns
    # simulate a run killed while writing shard 1: marker gone, file truncated
    (tmp_path / shard_name(1, 2)).with_suffix(".done.json").unlink()
    (tmp_path / shard_name(1, 2)).write_bytes(b"half")
    calls = []
    write_cache(tmp_path, SPEC, exs, lambda t: calls.append(1) or fake_topk(t), num_shards=2, progress=False)
    assert done.stat().st_mtime_ns == mtime        # the finished shard was not touched
    assert len(calls) == 5                         # only shard 1's five examples were recomputed
    assert len(TopKCache(tmp_path)) == 10


def test_mismatched_student_is_refused(tmp_path):
    write_cache(tmp_path, SPEC, examples(2), fake_topk, progress=False)
    cache = TopKCache(tmp_path)
    with pytest.raises(CacheError, match="tokenizer abc123 differs"):
        cache.check_compatible("zzz", V, L)
    with pytest.raises(CacheError, match="vocabulary 300 != student vocabulary 512"):
        cache.check_compatible("abc123", 512, L)
    cache.check_compatible("abc123", V, L)


def test_misaligned_record_is_named(tmp_path):
    write_cache(tmp_path, SPEC, examples(2), fake_topk, progress=False)
    cache = TopKCache(tmp_path)
    with pytest.raises(CacheError, match=r"record 1 was computed for other tokens"):
        cache.aligned_example(1, cache[cache.example(0)]["inputs"])


def test_nan_logprobs_are_refused_and_the_shard_discarded(tmp_path):
    def nan_topk(tokens):
        ids, top, tail = fake_topk(tokens)
        if tokens.shape[1] == L and tokens[0, 0] == nan_first:
            top[0, 3, 0] = np.nan
        return ids, top, tail
    exs = examples(4)
    nan_first = exs[1]["inputs"][0]
    with pytest.raises(CacheError, match="NaN/Inf log-probabilities for record 1"):
        write_cache(tmp_path, SPEC, exs, nan_topk, progress=False)
    assert not list(tmp_path.glob("shard-*"))


def test_truncated_shard_is_detected(tmp_path):
    write_cache(tmp_path, SPEC, examples(4), fake_topk, progress=False)
    shard = tmp_path / shard_name(0, 1)
    shard.write_bytes(shard.read_bytes()[:-40])
    with pytest.raises(CacheError, match="does not match its checksum"):
        TopKCache(tmp_path)


def test_unfinished_cache_and_changed_spec(tmp_path):
    with pytest.raises(CacheError, match="unfinished"):
        TopKCache(tmp_path)
    write_cache(tmp_path, SPEC, examples(2), fake_topk, progress=False)
    other = CacheSpec(**{**SPEC.__dict__, "k": 8})
    with pytest.raises(CacheError, match="describes a different cache"):
        write_cache(tmp_path, other, examples(2), fake_topk, progress=False)
    assert json.loads((tmp_path / "manifest.json").read_text())["k"] == K


def test_storage_per_token_against_full_vocabulary():
    spec = CacheSpec(teacher="x", tokenizer_fingerprint="x", vocab_size=49152, k=32, seq_len=128)
    assert spec.bytes_per_token() == 32 * (2 + 2) + 4
    assert spec.bytes_per_token() * 100 < 49152 * 2


def test_record_with_misaligned_positions_is_named(tmp_path):
    """A record whose teacher arrays do not line up with its L tokens is refused with the record named."""
    exs = examples(2)
    short = {k: v[:-1] for k, v in exs[1].items()}          # one position fewer than the manifest's L
    write_cache(tmp_path, SPEC, [exs[0], short], fake_topk, progress=False)
    cache = TopKCache(tmp_path)
    cache[cache.example(0)]
    with pytest.raises(CacheError, match=r"record 1 field 'inputs' has shape \(15,\).*misaligned"):
        cache[cache.example(1)]


def test_vocabulary_over_65535_keeps_ids_exact_in_int32(tmp_path):
    """A 70,000-token teacher: ids above uint16's range (65,535) are stored as int32 and read back exactly."""
    big_v = 70_000
    spec = CacheSpec(teacher="test:big", tokenizer_fingerprint="abc123", vocab_size=big_v, k=K, seq_len=L)
    assert spec.id_dtype == np.int32

    def big_topk(tokens_1n):
        n = tokens_1n.shape[1]
        ids = (big_v - 1 - np.arange(n * K).reshape(1, n, K) * 7).astype(np.int64)   # 69999, 69992, ...
        top = np.log(np.full((1, n, K), 0.2))
        return ids, top, np.log1p(-np.exp(top).sum(-1))
    exs = examples(3)
    write_cache(tmp_path, spec, exs, big_topk, num_shards=1, progress=False)
    cache = TopKCache(tmp_path)
    want, _, _ = big_topk(exs[0]["inputs"][None])
    got = cache[0]["teacher_ids"]
    assert int(got.max()) == big_v - 1 > 65_535          # uint16 storage would have wrapped it
    np.testing.assert_array_equal(got, want[0])
    assert CacheSpec(teacher="t", tokenizer_fingerprint="f", vocab_size=65_536, k=K, seq_len=L).id_dtype == np.uint16


def test_cache_written_by_two_processes_equals_one_process(tmp_path):
    """process_index 0 and 1 of 2 each write their shards (s % 2 == p); the manifest appears only after the
    second, and the cache reads back record for record as the one written by a single process."""
    exs = examples(10)
    one = write_cache(tmp_path / "one", SPEC, exs, fake_topk, num_shards=4, progress=False)
    first = write_cache(tmp_path / "two", SPEC, exs, fake_topk, num_shards=4, process_index=1, process_count=2,
                        progress=False)
    assert first == {} and not (tmp_path / "two" / "manifest.json").exists()
    assert sorted(p.name for p in (tmp_path / "two").glob("*.done.json")) == [
        shard_name(1, 4).split(".")[0] + ".done.json", shard_name(3, 4).split(".")[0] + ".done.json"]
    second = write_cache(tmp_path / "two", SPEC, exs, fake_topk, num_shards=4, process_index=0, process_count=2,
                         progress=False)
    assert second["records"] == one["records"] == 10
    a, b = TopKCache(tmp_path / "one"), TopKCache(tmp_path / "two")
    assert len(a) == len(b) == 10
    for i in range(10):
        for field, value in a[i].items():
            np.testing.assert_array_equal(b[i][field], value, err_msg=f"record {i} {field}")
