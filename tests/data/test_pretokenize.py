"""`bitjax tokenize`: one token shard per input file, the same bytes whatever the process count, a killed job
resumed without redoing finished shards, and the directory read back by `tokens:DIR` across its shards."""

import hashlib
import json
import os
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
from bitjax.cli import main
from bitjax.config import DataConfig, SourceConfig
from bitjax.data import DataError, build_pipeline
from bitjax.data.sources import token_directory
from tests.support import ROOT

N_FILES = 8
RECIPE = """
import dataclasses, importlib.util
spec = importlib.util.spec_from_file_location("tiny", {tiny!r})
tiny = importlib.util.module_from_spec(spec); spec.loader.exec_module(tiny)
from bitjax.config import SourceConfig
def get_config():
    cfg = tiny.get_config()
    return dataclasses.replace(cfg, data=dataclasses.replace(
        cfg.data, sources=(SourceConfig("web", {uri!r}),), tokenizer={tokenizer!r}))
"""


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_parquet_corpus(tmp_path_factory.mktemp("inputs"), 24_000, n_files=N_FILES, rows_per_group=500,
                                words=(20, 80))


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tokenizer") / "tokenizer.json"
    tokenizer_lib.save_atomic(tokenizer_lib.train_bpe([" ".join(WORDS)] * 20, 512), path)
    return path


@pytest.fixture(scope="module")
def recipe(tmp_path_factory, corpus, tokenizer) -> Path:
    path = tmp_path_factory.mktemp("recipe") / "web.py"
    path.write_text(RECIPE.format(tiny=str(ROOT / "recipes" / "tiny.py"), uri=f"parquet:{corpus}/*.parquet",
                                  tokenizer=str(tokenizer)))
    return path


def command(recipe: Path, out: Path, index: int | None = None, count: int | None = None) -> list[str]:
    slot = [] if index is None else ["--process-index", str(index), "--process-count", str(count)]
    return ["tokenize", str(recipe), "--out", str(out), *slot]


def subprocess_command(*args) -> list[str]:
    return [sys.executable, "-m", "bitjax.cli", *command(*args)]


ENV = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, recipe) -> Path:
    out = tmp_path_factory.mktemp("one") / "tokens"
    assert main(command(recipe, out, 0, 1)) == 0
    return out / "web"


def files_digest(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def test_two_processes_write_the_same_shards_as_one(one_process, recipe, tmp_path):
    out = tmp_path / "tokens"
    procs = [subprocess.Popen(subprocess_command(recipe, out, i, 2), cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    assert files_digest(out / "web") == files_digest(one_process)     # every shard, .done and the manifest
    manifest = json.loads((one_process / token_directory.MANIFEST).read_text())
    assert len(manifest["shards"]) == N_FILES and manifest["documents"] == 24_000
    for entry in manifest["shards"]:   # the recorded checksums are the files' own
        for name, record in entry["files"].items():
            data = (one_process / entry["name"] / name).read_bytes()
            assert record == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def test_a_killed_job_resumes_without_redoing_finished_shards(one_process, recipe, tmp_path):
    out = tmp_path / "tokens"
    proc = subprocess.Popen(subprocess_command(recipe, out, 0, 1), cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not list((out / "web").glob("*.done")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = sorted(p.name.removesuffix(".done") for p in (out / "web").glob("*.done"))
    assert proc.returncode == -signal.SIGKILL and 0 < len(finished) < N_FILES, finished
    assert not (out / "web" / token_directory.MANIFEST).exists()
    kept = [p for name in finished for p in [out / "web" / f"{name}.done", *(out / "web" / name).iterdir()]]
    stamps = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in kept}

    assert main(command(recipe, out, 0, 1)) == 0
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in kept} == stamps   # not rewritten
    assert files_digest(out / "web") == files_digest(one_process)


def test_tokens_dir_reads_any_document_across_its_shards(one_process, corpus, tokenizer):
    tok = tokenizer_lib.load(tokenizer)
    texts = [t for path in sorted(corpus.glob("*.parquet")) for t in pq.read_table(path).column("text").to_pylist()]
    shards = token_directory.load(one_process, tokenizer_lib.fingerprint(tok), vocab_size=tok.get_vocab_size())
    assert len(shards) == len(texts) and shards.n_tokens == json.loads((one_process / "manifest.json").read_text())[
        "tokens"]
    for i in np.random.default_rng(0).choice(len(texts), 50, replace=False).tolist() + [0, 2999, 3000, 23_999]:
        ids, prompt_len = shards.document(i)
        assert ids.tolist() == tok.encode(texts[i], add_special_tokens=False).ids and prompt_len == 0
    cfg = DataConfig(sources=(SourceConfig("pre", f"tokens:{one_process}"),), tokenizer=str(tokenizer), seq_len=32,
                     batch_size=4, num_shards=2)
    pipeline = build_pipeline(cfg)
    train, heldout = pipeline.sources["pre"].train, pipeline.sources["pre"].heldout
    assert len(train) + len(heldout) == len(texts) and len(heldout) == 480               # the 2% tail
    np.testing.assert_array_equal(heldout.document(0)[0], shards.document(len(train))[0])
    assert train.n_tokens + heldout.n_tokens == shards.n_tokens
    assert next(pipeline.train_iterator(1, 2))["inputs"].shape == (2, 32)


def test_a_damaged_or_foreign_tokens_dir_is_refused(one_process, tmp_path):
    import shutil

    copy = tmp_path / "web"
    shutil.copytree(one_process, copy)
    with pytest.raises(tokenizer_lib.TokenizerMismatch, match="made with tokenizer"):
        token_directory.load(copy, "0123456789abcdef")
    with pytest.raises(DataError, match="outside the tokenizer's vocabulary of 100"):
        token_directory.load(copy, vocab_size=100)
    tokens = copy / "shard-00003" / "tokens.npy"
    tokens.write_bytes(tokens.read_bytes()[:-4])
    with pytest.raises(DataError, match=r"shard-00003/tokens.npy: \d+ bytes, the manifest says \d+ .*truncated"):
        token_directory.load(copy)
