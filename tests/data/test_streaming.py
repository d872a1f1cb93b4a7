"""Streamed text sources: a generated Parquet corpus through the whole pipeline, sharded by file, held out by a
hash of the text, resumed exactly mid-file (also after SIGKILL), in host memory that does not grow with it."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from benchmarks.pipeline import WORDS, write_parquet_corpus
from bitjax import tokenizer as tokenizer_lib
from bitjax.config import DataConfig, SourceConfig
from bitjax.data import DataError, build_pipeline, coverage
from bitjax.data.sources import records, streaming, text_files, uris
from bitjax.errors import ConfigError
from tests.support import ROOT
from tests.training.test_remote_workdir import bucket  # noqa: F401 - the gs:// stand-in fixture

SMALL_DOCS = 4000   # the small corpus: document i is in file i // 1000 of 4, row groups (chunks) of 10 documents


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """20,000 documents in 4 Parquet files of 500-row groups."""
    return write_parquet_corpus(tmp_path_factory.mktemp("corpus"), 20_000, rows_per_group=500, words=(5, 30))


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    return write_parquet_corpus(tmp_path_factory.mktemp("small"), SMALL_DOCS, rows_per_group=10, words=(5, 30))


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> Path:
    """A byte-level BPE of 512 tokens trained on the generator's words (it decodes back to the text)."""
    path = tmp_path_factory.mktemp("tokenizer") / "tokenizer.json"
    tok = tokenizer_lib.train_bpe([" ".join(WORDS)] * 20 + [f"document {i}: the." for i in range(200)], 512)
    tokenizer_lib.save_atomic(tok, path)
    return path


def config(corpus, tokenizer, **kw) -> DataConfig:
    src = SourceConfig("web", f"parquet:{corpus}/*.parquet")
    return DataConfig(**{"sources": (src,), "tokenizer": str(tokenizer), "seq_len": 32, "batch_size": 4,
                         "shuffle_window": 256, **kw})


def stored_texts(corpus: Path) -> list[str]:
    return [t for path in sorted(corpus.glob("*.parquet")) for t in pq.read_table(path).column("text").to_pylist()]


def document_numbers(tok, docs) -> list[int]:
    """Which generated document each streamed document pair is ("document i: ...")."""
    return [int(tok.decode(ex["inputs"][1:].tolist()).split(":")[0].split()[1]) for ex in docs]


def test_data_shards_read_whole_files_and_held_out_documents_never_reach_training(small, tokenizer):
    cfg = config(small, tokenizer)
    stream = build_pipeline(cfg).sources["web"].stream
    tok = tokenizer_lib.load(tokenizer)
    train = [document_numbers(tok, stream.documents("train", j, 2, shuffle=True, repeat=False)) for j in range(2)]
    heldout = document_numbers(tok, stream.documents("heldout", 0, 1, shuffle=False, repeat=False))
    expected = {i for i, text in enumerate(stored_texts(small)) if streaming.is_heldout(text, cfg.heldout_fraction)}
    assert 0.01 < len(expected) / SMALL_DOCS < 0.03                    # about data.heldout_fraction = 0.02
    assert sorted(heldout) == heldout and set(heldout) == expected     # the held-out split, in stored order
    for j, numbers in enumerate(train):
        assert len(numbers) == len(set(numbers))                       # nothing twice in an epoch
        assert {i // 1000 for i in numbers} == {j, j + 2}              # shard j streams files j and j + 2
        assert numbers != sorted(numbers)                              # shuffled
    assert not set(train[0]) & set(train[1])
    assert set(train[0]) | set(train[1]) == set(range(SMALL_DOCS)) - expected


def test_a_pass_over_the_corpus_through_the_train_iterator_holds_memory_flat(corpus, tokenizer):
    """One whole pass of the train iterator (pack, mix, batch) in a fresh process, RSS read after every batch:
    the second half of the pass needs no more memory than its first quarter (20k vs 200k documents in
    docs/data.md: `python -m benchmarks.pipeline --rss-docs 20000,200000`)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-m", "benchmarks.pipeline", "--one-pass", f"{corpus}/*.parquet",
                          "--tokenizer", str(tokenizer)], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    tok = tokenizer_lib.load(tokenizer)
    texts = [t for t in stored_texts(corpus) if not streaming.is_heldout(t, 0.02)]
    expected = sum(len(e.ids) + 1 for e in tok.encode_batch_fast(texts, add_special_tokens=False))
    assert expected - 8 * 1024 < result["tokens"] <= expected         # every training token, but a last part-batch
    rss = result["rss_mb"]
    quarter = len(rss) // 4
    print(f"{len(rss)} batches, RSS first quarter peak {max(rss[:quarter]):.0f} MB, second half peak "
          f"{max(rss[len(rss) // 2:]):.0f} MB, process peak {result['peak_mb']:.0f} MB")
    assert max(rss[len(rss) // 2:]) < max(rss[:quarter]) + 24


@pytest.mark.slow
def test_peak_memory_of_a_pass_is_the_same_for_200k_documents_as_for_20k(tmp_path, tokenizer):
    from benchmarks.pipeline import peak_rss_of_a_pass

    small, large = (peak_rss_of_a_pass(n, str(tokenizer), tmp_path) for n in (20_000, 200_000))
    print(f"peak RSS: 20k documents {small['peak_mb']:.0f} MB, 200k documents {large['peak_mb']:.0f} MB")
    assert large["tokens"] > 8 * small["tokens"]
    assert large["peak_mb"] < small["peak_mb"] + 32


def test_restoring_from_every_one_of_the_first_20_batches_is_exact_mid_file(small, tokenizer, tmp_path):
    """A streamed source mixed with a tokenized-once one: the data position after any batch restores exactly."""
    lines = tmp_path / "lines.jsonl"
    lines.write_text("".join(json.dumps({"text": f"a small source, line {i}."}) + "\n" for i in range(50)))
    srcs = (SourceConfig("web", f"parquet:{small}/*.parquet", 0.7), SourceConfig("lines", f"jsonl:{lines}", 0.3))
    # a window of 16 documents: its start, which the position records, moves past whole chunks within 20 batches
    pipeline = build_pipeline(config(small, tokenizer, sources=srcs, shuffle_window=16))
    states = _restores_exactly(pipeline, points=range(20), ahead=5)
    # the positions restored from lie inside files: chunks already read, documents of a chunk already taken
    files = [s for s in _file_states(states[19]) if s]
    assert any(s["parent"]["next_index"] > 0 for s in files) and any(s["next_index_in_buffer"] > 0 for s in files)


def _restores_exactly(pipeline, points, ahead: int) -> list:
    """The train iterator's saved position before each batch, as Grain's CheckpointSave writes it (JSON); the
    iterator restored at each of `points` yields the next `ahead` batches exactly. Returns the positions."""
    it = pipeline.train_iterator()
    states, batches = [], []
    for _ in range(max(points) + ahead):
        states.append(json.loads(json.dumps(it.get_state())))
        batches.append(next(it))
    for point in points:
        restored = pipeline.train_iterator()
        restored.set_state(states[point])
        for k in range(ahead):
            got, want = next(restored), batches[point + k]
            for key in want:
                np.testing.assert_array_equal(got[key], want[key], err_msg=f"restored at {point}, +{k}, {key}")
    return states


def _file_states(state):
    """The per-file iterator states (chunk read, document in chunk) anywhere in a saved data position."""
    if isinstance(state, dict):
        if "iterators_in_use_states" in state:
            yield from state["iterators_in_use_states"]
        for value in state.values():
            yield from _file_states(value)
    elif isinstance(state, list):
        for value in state:
            yield from _file_states(value)


def test_a_position_saved_by_two_processes_restores_into_one(small, tokenizer):
    pipeline = build_pipeline(config(small, tokenizer, num_shards=4))
    per_process = [pipeline.train_iterator(p, 2) for p in range(2)]
    for _ in range(7):
        for it in per_process:
            next(it)
    states = [json.loads(json.dumps(it.get_state())) for it in per_process]
    merged = {"num_shards": 4, "shards": {**states[0]["shards"], **states[1]["shards"]}}
    one = pipeline.train_iterator(0, 1, num_shards=4)
    one.set_state(merged)
    for _ in range(5):
        want = [next(it) for it in per_process]
        got = next(one)
        for key in got:
            np.testing.assert_array_equal(got[key], np.concatenate([w[key] for w in want]))


def test_fewer_files_than_data_shards_is_one_line(small, tokenizer):
    with pytest.raises(DataError, match=r"'web' has 4 file\(s\), fewer than the 8 data shards"):
        build_pipeline(config(small, tokenizer, num_shards=8, batch_size=8)).train_iterator(0, 1)


def test_a_source_without_held_out_documents_or_one_that_cannot_stream_is_refused(tmp_path, tokenizer):
    tiny = write_parquet_corpus(tmp_path / "tiny", 9, n_files=3, words=(5, 10))
    assert not any(streaming.is_heldout(t, 0.01) for t in stored_texts(tiny))
    pipeline = build_pipeline(config(tiny, tokenizer, heldout_fraction=0.01))
    with pytest.raises(DataError, match="'web': none of its documents is held out at data.heldout_fraction=0.01"):
        pipeline.heldout_batches(1)
    with pytest.raises(ConfigError, match="cannot stream"):
        SourceConfig("pre", "tokens:somewhere", stream=True)


def test_the_coverage_table_estimates_a_streamed_source_from_metadata(corpus, tokenizer):
    from bitjax.config import TrainConfig

    pipeline = build_pipeline(config(corpus, tokenizer))
    tok = tokenizer_lib.load(tokenizer)
    texts = [t for t in stored_texts(corpus) if not streaming.is_heldout(t, 0.02)]
    exact = sum(len(e.ids) for e in tok.encode_batch_fast(texts, add_special_tokens=False))
    [row] = coverage.coverage(TrainConfig(data=pipeline.cfg), pipeline)
    print(f"estimated {row.held:,} training tokens, exactly {exact:,}")
    assert row.estimated and abs(row.held - exact) < 0.1 * exact
    assert f"~{row.held:,}" in coverage.render([row], 100, "repeat") and "estimated from" in \
        coverage.render([row], 100, "repeat")


def test_jsonl_and_arrayrecord_chunks_together_are_the_whole_file(tmp_path, monkeypatch):
    """A line belongs to the chunk it starts in, whatever falls on a chunk boundary; records likewise."""
    monkeypatch.setattr(text_files, "CHUNK_BYTES", 97)
    monkeypatch.setattr(text_files, "RECORDS_PER_CHUNK", 7)
    rng = np.random.default_rng(0)
    lines = [json.dumps({"id": str(i), "text": "x" * int(rng.integers(0, 300))}) for i in range(60)]
    path = tmp_path / "docs.jsonl"
    path.write_text("\n".join(lines[:30]) + "\n\n" + "\n".join(lines[30:]) + "\n")   # a blank line too
    expected = list(records.read_jsonl(path))
    [jsonl] = uris.text_files(f"jsonl:{path}")
    assert jsonl.num_chunks() > 20
    assert [d for k in range(jsonl.num_chunks()) for d in jsonl.read_chunk(k)] == expected
    records.write_arrayrecord(tmp_path / "docs.array_record", [json.loads(line) for line in lines])
    [ar] = uris.text_files(f"arrayrecord:{tmp_path}/*.array_record")
    got = [d for k in range(ar.num_chunks()) for d in ar.read_chunk(k)]
    assert [d["text"] for d in got] == [d["text"] for d in expected] and ar.num_chunks() == 9


def test_a_parquet_row_group_is_read_in_bounded_chunks_in_order_or_from_any_chunk(tmp_path, monkeypatch):
    """pyarrow's write_table puts a file in one row group: it is cut into chunks of about PARQUET_CHUNK_BYTES of
    text, read as record batches; reading them in order or starting at any one (a resume) gives the same rows."""
    monkeypatch.setattr(text_files, "PARQUET_CHUNK_BYTES", 4096)
    corpus = write_parquet_corpus(tmp_path / "one_group", 2000, n_files=1, rows_per_group=None, words=(5, 30))
    [path] = sorted(corpus.glob("*.parquet"))
    assert pq.ParquetFile(path).metadata.num_row_groups == 1
    expected = pq.read_table(path).column("text").to_pylist()
    [file] = uris.text_files(f"parquet:{path}")
    n = file.num_chunks()
    assert n > 20
    assert [d["text"] for k in range(n) for d in file.read_chunk(k)] == expected
    [fresh] = uris.text_files(f"parquet:{path}")
    for k in (n - 1, 7, 8, 0, 9):   # out of order: each read starts its own reader at the chunk's first row
        start = sum(len(file.read_chunk(j)) for j in range(k))
        got = [d["text"] for d in fresh.read_chunk(k)]
        assert got == expected[start:start + len(got)] and got
    assert max(file.chunk_size(k) for k in range(n)) < 2 * 4096


def test_restoring_inside_one_large_row_group_is_exact(tmp_path, tokenizer, monkeypatch):
    monkeypatch.setattr(text_files, "PARQUET_CHUNK_BYTES", 256)   # a few documents a chunk
    corpus = write_parquet_corpus(tmp_path / "one_group", 1200, n_files=2, rows_per_group=None, words=(5, 30))
    pipeline = build_pipeline(config(corpus, tokenizer, shuffle_window=16))
    states = _restores_exactly(pipeline, points=(3, 9, 12), ahead=4)
    files = [s for s in _file_states(states[12]) if s]
    assert any(s["parent"]["next_index"] > 1 for s in files)   # past several chunks of the one row group


def test_a_tfds_dataset_with_a_data_dir_streams_and_loads(tokenizer):
    """Any TFDS dataset built as array_record: here the shipped KJV builder's output, named by its TFDS name."""
    from bitjax.data.sources import tfds_corpora
    tfds_corpora.build("kjv")
    src = dict(uri="tfds:bitjax_kjv", data_dir=str(tfds_corpora.data_dir()))
    assert len(uris.load_documents(src["uri"], data_dir=src["data_dir"])) == 1189
    cfg = DataConfig(sources=(SourceConfig("kjv", **src, stream=True),), tokenizer=str(tokenizer), seq_len=32,
                     batch_size=4, shuffle_window=256)   # not 4096: 1,189 chapters would fill it 3.4 times over
    pipeline = build_pipeline(cfg)
    assert next(pipeline.train_iterator())["inputs"].shape == (4, 32)
    stream = pipeline.sources["kjv"].stream
    n_train = sum(1 for _ in stream.documents("train", 0, 1, shuffle=False, repeat=False))
    n_heldout = sum(1 for _ in stream.documents("heldout", 0, 1, shuffle=False, repeat=False))
    assert n_train + n_heldout == 1189 and n_heldout > 0
    with pytest.raises(ConfigError, match=r"not a shipped corpus \(kjv, shakespeare\); set the source's data_dir"):
        uris.text_files("tfds:bitjax_kjv")


def test_a_corpus_in_a_bucket_streams_like_the_local_one(bucket, small, tokenizer):  # noqa: F811
    """The same files read through `gs://` (the stand-in filesystem of tests/training/test_remote_workdir.py) give the
    same batches: globbing and reading go through etils.epath."""
    shutil.copytree(small, bucket / "corpus")
    local = build_pipeline(config(small, tokenizer)).train_iterator()
    remote_cfg = config(small, tokenizer, sources=(SourceConfig("web", "parquet:gs://bucket/corpus/*.parquet"),))
    remote = build_pipeline(remote_cfg).train_iterator()
    for _ in range(3):
        a, b = next(local), next(remote)
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


# --------------------------------------------------------------------------- SIGKILL and resume

RECIPE = """
import dataclasses, importlib.util
spec = importlib.util.spec_from_file_location("tiny", {tiny!r})
tiny = importlib.util.module_from_spec(spec); spec.loader.exec_module(tiny)
from bitjax.config import SourceConfig
def get_config():
    cfg = tiny.get_config()
    data = dataclasses.replace(cfg.data, sources=(SourceConfig("web", {uri!r}),), tokenizer={tokenizer!r},
                               shuffle_window=256, vocab_size=512)
    return dataclasses.replace(cfg, data=data, model=dataclasses.replace(cfg.model, vocab_size=512))
"""
TRAIN = ["steps=40", "checkpoint.every=20", "model.n_layers=2", "data.seq_len=64", "data.batch_size=8",
         "log_every=5", "eval_every=1000", "eval_batches=1", "optim.warmup_steps=5"]


def _train(recipe: Path, workdir: Path) -> list[str]:
    args = [sys.executable, "-m", "bitjax.cli", "train", str(recipe), "--workdir", str(workdir), "--no-progress"]
    return args + [a for o in TRAIN for a in ("--set", o)]


def test_a_run_killed_after_a_checkpoint_resumes_the_stream_exactly(corpus, tokenizer, tmp_path):
    """SIGKILL after the step-20 checkpoint, then the same command: its steps 21..40 train on the batches of an
    uninterrupted run (the parameters and the data position at step 40 are bitwise the same)."""
    from bitjax.config import apply_overrides, load_recipe
    from bitjax.training.checkpointer import Checkpointer
    from bitjax.training.trainer import Trainer

    recipe = tmp_path / "streamed.py"
    recipe.write_text(RECIPE.format(tiny=str(ROOT / "recipes" / "tiny.py"), uri=f"parquet:{corpus}/*.parquet",
                                    tokenizer=str(tokenizer)))
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    proc = subprocess.Popen(_train(recipe, resumed), cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (resumed / "checkpoints" / "20").is_dir() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (resumed / "checkpoints" / "40").exists(), "killed too late to test resuming"
    saved = [json.loads(p.read_text()) for p in (resumed / "checkpoints" / "20" / "data").glob("*.json")]
    assert any(s["next_index_in_buffer"] > 0 for s in _file_states(saved) if s), "not saved mid-chunk"

    runs = [subprocess.Popen(_train(recipe, w), cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True) for w in (straight, resumed)]   # the uninterrupted run, and the rerun
    outs = [run.communicate(timeout=600) for run in runs]
    assert all(run.returncode == 0 for run in runs), outs
    assert "resumed from step 20" in outs[1][0]
    cfg = apply_overrides(load_recipe(recipe), TRAIN)
    abstract = Trainer.create(cfg).abstract_state()
    finals = []
    for workdir in (straight, resumed):
        ckpt = Checkpointer(workdir / "checkpoints", cfg)
        finals.append(ckpt.restore_state(40, abstract))
        ckpt.close()
    data = [[p.read_text() for p in sorted((w / "checkpoints" / "40" / "data").glob("*.json"))]
            for w in (straight, resumed)]
    assert data[0] == data[1]
    import jax
    for a, b in zip(jax.tree.leaves(finals[0].params), jax.tree.leaves(finals[1].params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
