import json

import numpy as np
import pytest

from bitjax.topk_cache import CacheError, CacheSpec, TopKCache, shard_name, write_cache

V, L, K = 300, 16, 4
SPEC = CacheSpec(teacher="test:random", tokenizer_fingerprint="abc123", vocab_size=V, k=K, seq_len=L)


def fake_teacher(tokens_BL):
    """Deterministic per sequence, whatever batch it arrives in."""
    logits = np.stack([np.random.default_rng(int(row.sum()) + 7 * int(row[0])).normal(size=(L, V)) * 3
                       for row in tokens_BL])
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    ids = np.argsort(-logp, axis=-1)[..., :K]
    top = np.take_along_axis(logp, ids, -1)
    tail = np.log1p(-np.exp(top).sum(-1))
    return ids, top, tail


def sequences(n=10):
    rng = np.random.default_rng(0)
    return [rng.integers(0, V, L).astype(np.int32) for _ in range(n)]


def test_round_trip_exact(tmp_path):
    seqs = sequences()
    manifest = write_cache(tmp_path, SPEC, seqs, fake_teacher, num_shards=3, batch_size=4, progress=False)
    assert manifest["records"] == 10 and len(manifest["shards"]) == 3
    cache = TopKCache(tmp_path)
    assert len(cache) == 10
    stored = {tuple(cache[i]["tokens"]): cache[i] for i in range(len(cache))}
    for seq in seqs:
        rec = stored[tuple(seq)]
        ids, top, tail = fake_teacher(seq[None])
        np.testing.assert_array_equal(rec["teacher_ids"], ids[0])
        # exactly what float16 storage holds
        np.testing.assert_array_equal(rec["teacher_logprobs"], top[0].astype(np.float16).astype(np.float32))
        np.testing.assert_array_equal(rec["teacher_tail"], tail[0].astype(np.float32))


def test_float32_storage_is_lossless(tmp_path):
    spec = CacheSpec(**{**SPEC.__dict__, "logprob_dtype": "float32"})
    write_cache(tmp_path, spec, sequences(2), fake_teacher, progress=False)
    rec = TopKCache(tmp_path)[0]
    _, top, _ = fake_teacher(rec["tokens"][None])
    np.testing.assert_array_equal(rec["teacher_logprobs"], top[0].astype(np.float32))


def test_resume_skips_finished_and_redoes_half_written(tmp_path):
    seqs = sequences()
    write_cache(tmp_path, SPEC, seqs, fake_teacher, num_shards=2, progress=False)
    done = tmp_path / shard_name(0, 2)
    mtime = done.stat().st_mtime_ns
    # simulate a run killed while writing shard 1: marker gone, file truncated
    (tmp_path / shard_name(1, 2)).with_suffix(".done.json").unlink()
    (tmp_path / shard_name(1, 2)).write_bytes(b"half")
    calls = []
    write_cache(tmp_path, SPEC, seqs, lambda t: calls.append(len(t)) or fake_teacher(t), num_shards=2,
                progress=False)
    assert done.stat().st_mtime_ns == mtime        # the finished shard was not touched
    assert sum(calls) == 5                         # only shard 1's five sequences were recomputed
    assert len(TopKCache(tmp_path)) == 10


def test_mismatched_student_is_refused(tmp_path):
    write_cache(tmp_path, SPEC, sequences(2), fake_teacher, progress=False)
    cache = TopKCache(tmp_path)
    with pytest.raises(CacheError, match="tokenizer abc123 differs"):
        cache.check_compatible("zzz", V, L)
    with pytest.raises(CacheError, match="vocabulary 300 != student vocabulary 512"):
        cache.check_compatible("abc123", 512, L)
    cache.check_compatible("abc123", V, L)


def test_misaligned_record_is_named(tmp_path):
    write_cache(tmp_path, SPEC, sequences(2), fake_teacher, progress=False)
    cache = TopKCache(tmp_path)
    with pytest.raises(CacheError, match=r"record 1 was computed for other tokens"):
        cache.aligned(1, cache[0]["tokens"])


def test_nan_logprobs_are_refused_at_write(tmp_path):
    def nan_teacher(tokens):
        ids, top, tail = fake_teacher(tokens)
        top[1, 3, 0] = np.nan
        return ids, top, tail
    with pytest.raises(CacheError, match="NaN/Inf log-probabilities for record 1"):
        write_cache(tmp_path, SPEC, sequences(4), nan_teacher, progress=False)
    assert not (tmp_path / shard_name(0, 1)).exists()


def test_truncated_shard_is_detected(tmp_path):
    write_cache(tmp_path, SPEC, sequences(4), fake_teacher, progress=False)
    shard = tmp_path / shard_name(0, 1)
    shard.write_bytes(shard.read_bytes()[:-40])
    with pytest.raises(CacheError, match="does not match its checksum"):
        TopKCache(tmp_path)


def test_unfinished_cache_and_changed_spec(tmp_path):
    with pytest.raises(CacheError, match="unfinished"):
        TopKCache(tmp_path)
    write_cache(tmp_path, SPEC, sequences(2), fake_teacher, progress=False)
    other = CacheSpec(**{**SPEC.__dict__, "k": 8})
    with pytest.raises(CacheError, match="describes a different cache"):
        write_cache(tmp_path, other, sequences(2), fake_teacher, progress=False)
    assert json.loads((tmp_path / "manifest.json").read_text())["k"] == K


def test_storage_per_token_against_full_vocabulary():
    spec = CacheSpec(teacher="x", tokenizer_fingerprint="x", vocab_size=49152, k=32, seq_len=128)
    assert spec.bytes_per_token() == 32 * (2 + 2) + 8
    assert spec.bytes_per_token() * 100 < 49152 * 2
