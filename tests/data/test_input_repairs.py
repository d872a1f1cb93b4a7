"""The fix an error names must work, and must not destroy the user's data: in-process checks beside the
command-line table of tests/test_bad_inputs.py."""

import json

import numpy as np
import pytest

from bitjax.data.sources.token_shard import load_shard
from bitjax.data.teacher_files import topk_cache, topk_cache_writer
from bitjax.errors import BitjaxError, CacheError, DataError
from bitjax.teachers import jsonl_output, trace_sampler
from tests.data.test_topk_cache import SPEC, examples, fake_topk


def test_a_deleted_cache_shard_is_rewritten_by_rerunning_the_writer(tmp_path):
    exs = examples()
    first = topk_cache_writer.write_cache(tmp_path, SPEC, exs, fake_topk, num_shards=3, progress=False)
    shard = tmp_path / topk_cache.shard_name(1, 3)
    original = shard.read_bytes()
    shard.unlink()   # its .done.json marker survives
    with pytest.raises(CacheError, match="missing; rerun `bitjax cache-teacher`"):
        topk_cache.TopKCache(tmp_path)
    again = topk_cache_writer.write_cache(tmp_path, SPEC, exs, fake_topk, num_shards=3, progress=False)
    assert shard.read_bytes() == original and again["shards"] == first["shards"]
    assert len(topk_cache.TopKCache(tmp_path)) == 10


def test_a_changed_cache_shard_is_rewritten_by_rerunning_the_writer(tmp_path):
    exs = examples()
    topk_cache_writer.write_cache(tmp_path, SPEC, exs, fake_topk, num_shards=2, progress=False)
    shard = tmp_path / topk_cache.shard_name(0, 2)
    original = shard.read_bytes()
    shard.write_bytes(original[: len(original) // 2])
    with pytest.raises(CacheError, match="rerun `bitjax cache-teacher`"):
        topk_cache.TopKCache(tmp_path)
    topk_cache_writer.write_cache(tmp_path, SPEC, exs, fake_topk, num_shards=2, progress=False)
    assert shard.read_bytes() == original
    assert len(topk_cache.TopKCache(tmp_path)) == 10


def test_a_nan_cached_tail_is_named_by_record(tmp_path, monkeypatch):
    def nan_tail(tokens):
        ids, top, tail = fake_topk(tokens)
        return ids, top, np.full_like(tail, np.nan)

    monkeypatch.setattr(topk_cache_writer, "_check_finite", lambda *a: None)   # as if written by another tool
    topk_cache_writer.write_cache(tmp_path, SPEC, examples(2), nan_tail, num_shards=1, progress=False)
    with pytest.raises(CacheError, match="record 0 holds a NaN or positive tail"):
        topk_cache.TopKCache(tmp_path)[0]


@pytest.mark.parametrize("manifest,match", [("{oops", "is not JSON"),
                                            ('{"format": "%s"}' % topk_cache.FORMAT, "lacks teacher"),
                                            ("[1, 2]", "not a bitjax top-k cache manifest")])
def test_a_bad_manifest_is_one_error_naming_it(tmp_path, manifest, match):
    (tmp_path / "manifest.json").write_text(manifest)
    with pytest.raises(CacheError, match=match):
        topk_cache.TopKCache(tmp_path)


def test_an_unreadable_tokens_shard_is_never_called_deletable(tmp_path):
    (tmp_path / "meta.json").write_text("{}")
    (tmp_path / "tokens.npy").write_bytes(b"garbage")
    with pytest.raises(DataError) as user:
        load_shard(tmp_path)
    assert "delete" not in str(user.value) and "rewrite" in str(user.value)
    with pytest.raises(DataError, match="delete the derived cache"):
        load_shard(tmp_path, derived=True)


@pytest.mark.parametrize("content", [b"my notes\nlast line without a newline", b"no newline at all",
                                     b'{"a": 1}\n{"id": "torn'])
def test_a_foreign_out_file_is_refused_untouched(tmp_path, content):
    out = tmp_path / "notes.txt"
    out.write_bytes(content)
    with pytest.raises(BitjaxError, match="is not a `bitjax traces` output; nothing was changed"):
        trace_sampler.check_output(out)
    with pytest.raises(BitjaxError, match="not a `bitjax rephrase` output"):
        jsonl_output.read_own_records(out, lambda r, where: "format" in r, "rephrase")
    assert out.read_bytes() == content


def test_an_own_output_keeps_its_records_and_loses_only_the_torn_line(tmp_path):
    out = tmp_path / "out.jsonl"
    good = json.dumps({"id": "d0#qa", "format": "qa"}) + "\n"
    out.write_text(good + '{"id": "d1#qa", "te')
    records = jsonl_output.read_own_records(out, lambda r, where: "format" in r, "rephrase")
    assert records == [json.loads(good)] and out.read_text() == good
