"""A gs:// work directory end to end (train, resume, eval, export, generate) without a network or gcsfs.

The bucket is a directory served under the `gs` protocol by a test fsspec filesystem, so every file bitjax
and Orbax open through etils.epath takes the same route as on GCS (epath -> fsspec -> the `gs`
implementation), and Orbax follows its gs:// code paths (commit-file checkpoints, no directory renames).
Three things are put in place of GCS itself, each named where it is set (a fourth, for teacher caches, in
that test):
- fsspec's `gs` implementation (gcsfs in production) is the directory-backed filesystem below;
- TensorStore writes arrays with its own GCS driver, not fsspec: its kvstore is pointed at the same
  bucket directory through TensorStore's file driver;
- the bucket is a flat one (no hierarchical namespace), which Orbax would ask google-cloud-storage.
The test runs in an empty working directory and checks that it stays empty.
"""

import importlib
import json

import numpy as np
import pytest
from fsspec import register_implementation
from fsspec.implementations.dirfs import DirFileSystem
from fsspec.implementations.local import LocalFileSystem

from bitjax.cli import main
from tests.support import TINY

FAST = ["--set", "model.n_layers=1", "--set", "data.seq_len=32", "--set", "data.batch_size=4",
        "--set", "eval_batches=1", "--set", "eval_every=2", "--set", "log_every=1", "--no-progress"]


class BucketDirectory(DirFileSystem):
    """`gs://bucket/key` served from `ROOT/bucket/key` (what gcsfs serves from GCS)."""

    protocol = ("gs", "gcs")
    cachable = False   # each test has its own ROOT
    root: str = ""

    def __init__(self, *args, finalize_on_close: bool = False, **kwargs):   # epath passes gcsfs's option
        super().__init__(path=self.root, fs=LocalFileSystem(auto_mkdir=True))   # objects need no folders

    def _join(self, path):
        strip = lambda p: p.split("://", 1)[-1]
        return super()._join(strip(path) if isinstance(path, str) else [strip(p) for p in path])


@pytest.fixture
def bucket(tmp_path, monkeypatch):
    from etils.epath import backend
    from orbax.checkpoint._src.path import gcs_utils

    from bitjax import paths

    root = tmp_path / "buckets"
    (root / "bucket").mkdir(parents=True)
    monkeypatch.setattr(BucketDirectory, "root", str(root))
    register_implementation("gs", BucketDirectory, clobber=True)
    register_implementation("gcs", BucketDirectory, clobber=True)
    backend.fsspec_backend._get_filesystem.cache_clear()   # epath caches the filesystem per protocol
    monkeypatch.setattr(gcs_utils, "get_kvstore_for_gcs", lambda path: {
        "driver": "file", "path": str(root / path.removeprefix("gs://"))})
    monkeypatch.setattr(gcs_utils, "is_hierarchical_namespace_enabled", lambda path: False)
    monkeypatch.setattr(paths, "_has_google_cloud_storage", lambda: True)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    yield root / "bucket"
    backend.fsspec_backend._get_filesystem.cache_clear()
    registry = importlib.import_module("fsspec.registry")   # `fsspec.registry` is also a mapping's name
    for protocol in ("gs", "gcs"):   # back to the lazy gcsfs entry
        registry._registry.pop(protocol, None)
    assert list(cwd.iterdir()) == [], "a gs:// run wrote into the local working directory"


def test_a_gs_workdir_trains_resumes_evaluates_and_exports_through_the_bucket(bucket, capsys):
    run = "gs://bucket/run"
    assert main(["train", TINY, "--workdir", run, "--set", "steps=2", "--set", "checkpoint.every=1", *FAST]) == 0
    assert sorted(p.name for p in (bucket / "run" / "checkpoints").iterdir()) == ["1", "2"]
    # Orbax's gs:// protocol: a commit file marks a finished checkpoint (a bucket cannot rename directories)
    assert (bucket / "run" / "checkpoints" / "2" / "commit_success.txt").is_file()
    for name in ("config.json", "tokenizer.json", "metrics.jsonl", "summary.json", "loss_curve.png"):
        assert (bucket / "run" / name).is_file(), name
    assert any(p.name.startswith("events.out.tfevents") for p in (bucket / "run" / "tb").iterdir())
    assert not (bucket / "run" / "train.lock").exists()

    assert main(["train", TINY, "--workdir", run, "--set", "steps=4", "--set", "checkpoint.every=1", *FAST]) == 0
    assert "resumed from step 2 in gs://bucket/run/checkpoints" in capsys.readouterr().out
    steps = [json.loads(line)["step"] for line in (bucket / "run" / "metrics.jsonl").read_text().splitlines()]
    assert sorted(set(steps)) == [1, 2, 3, 4]   # the first run's records kept across the resume
    assert json.loads((bucket / "run" / "summary.json").read_text())["steps"] == 4

    assert main(["eval", run, "--batches", "1"]) == 0
    assert "perplexity" in capsys.readouterr().out

    assert main(["export", run, "gs://bucket/out/student.gguf", "--format", "gguf"]) == 0
    assert (bucket / "out" / "student.gguf").stat().st_size > 0
    capsys.readouterr()
    # llama.cpp opens local files: the GGUF is copied to a temporary directory outside the working directory
    greedy = ["--prompt", "The", "--max-new-tokens", "3", "--temperature", "0"]
    assert main(["generate", "gs://bucket/out/student.gguf", *greedy]) == 0
    from_bucket = capsys.readouterr().out
    assert main(["generate", str(bucket / "out" / "student.gguf"), *greedy]) == 0   # the same file, read locally
    assert from_bucket == capsys.readouterr().out
    assert main(["export", run, "gs://bucket/out/packed", "--format", "packed"]) == 0
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= {p.name for p in (bucket / "out" / "packed")
                                                                      .iterdir()}


def test_a_missing_bucket_is_one_line_before_anything_is_written(bucket, capsys):
    code = main(["train", TINY, "--workdir", "gs://other-bucket/run", "--set", "steps=1", *FAST])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "bucket gs://other-bucket does not exist" in err
    assert not (bucket.parent / "other-bucket").exists()


def test_a_live_lock_on_a_bucket_is_refused(bucket, capsys):
    (bucket / "run").mkdir(parents=True)
    (bucket / "run" / "train.lock").write_text(json.dumps({"pid": 1, "host": "elsewhere"}))
    code = main(["train", TINY, "--workdir", "gs://bucket/run", "--set", "steps=1", *FAST])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "host elsewhere" in err
    assert sorted(p.name for p in (bucket / "run").iterdir()) == ["train.lock"]


def test_a_gs_teacher_cache_is_written_resumed_and_read_through_the_bucket(bucket, monkeypatch, tmp_path):
    """A cache written to gs:// (shards written locally, then uploaded; markers after them) reads back as the
    same cache written locally; a rerun after a lost shard rewrites that shard alone, and a truncated object is
    caught by its size without reading the shards back. The fourth stand-in: ArrayRecord opens gs:// objects
    with its own GCS reader (not fsspec), pointed here at the bucket directory."""
    from array_record.python.array_record_module import ArrayRecordReader

    from bitjax.data.teacher_files import topk_cache
    from bitjax.data.teacher_files.topk_cache import CacheError, TopKCache, shard_name
    from bitjax.data.teacher_files.topk_cache_writer import write_cache
    from tests.data.test_topk_cache import SPEC, examples, fake_topk

    monkeypatch.setattr(topk_cache, "open_shard",
                        lambda path: ArrayRecordReader(str(bucket.parent / str(path).removeprefix("gs://"))))
    exs = examples(10)
    write_cache(tmp_path / "local", SPEC, exs, fake_topk, num_shards=3, progress=False)
    remote = "gs://bucket/caches/natural"
    manifest = write_cache(remote, SPEC, exs, fake_topk, num_shards=3, progress=False)
    assert manifest["records"] == 10
    stored = bucket / "caches" / "natural"
    shards = [shard_name(s, 3) for s in range(3)]
    assert sorted(p.name for p in stored.iterdir()) == sorted(
        ["manifest.json", "spec.json", *shards, *(s.replace(".arrayrecord", ".done.json") for s in shards)])
    local, cache = TopKCache(tmp_path / "local"), TopKCache(remote)
    assert len(cache) == 10
    for i in range(10):
        for field, value in local[i].items():
            np.testing.assert_array_equal(cache[i][field], value, err_msg=f"record {i} {field}")

    original = (stored / shards[1]).read_bytes()
    (stored / shards[1]).unlink()                  # a lost object; its marker survives
    with pytest.raises(CacheError, match="is missing"):
        TopKCache(remote)
    calls = []
    write_cache(remote, SPEC, exs, lambda t: calls.append(1) or fake_topk(t), num_shards=3, progress=False)
    assert len(calls) == 3 and (stored / shards[1]).read_bytes() == original   # shard 1's three examples only
    (stored / shards[2]).write_bytes((stored / shards[2]).read_bytes()[:-40])
    with pytest.raises(CacheError, match=r"has \d+ bytes, its marker says \d+ \(truncated or changed\)"):
        TopKCache(remote)
