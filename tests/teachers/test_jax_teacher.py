"""`bitjax cache-teacher --backend jax`: the teacher imported into bitjax, many packed rows per jitted forward,
each document read alone, the same cache as the hf: backend (torch, one document at a time), and the same cache
whether one process or two write it."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bitjax.config import apply_overrides, load_recipe
from bitjax.data.schema import SEQUENCE_FIELDS
from bitjax.data.teacher_files.topk_cache import TopKCache, shard_name
from bitjax.data.teacher_files.topk_cache_writer import example_topk
from bitjax.errors import ConfigError
from bitjax.teachers.cache_teacher import cache_teacher
from tests.support import KD_TINY, ROOT

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

SMALL = ["data.seq_len=32", "data.batch_size=4", "loss_chunk=8"]   # four rows per forward, four head blocks
K, V, L = 4, 2048, 32                                               # V: kd_tiny's vocabulary
WRITE = dict(k=K, n_examples=20, num_shards=2, logprob_dtype="float32", progress=False)


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    """A random 2-layer LlamaForCausalLM over kd_tiny's vocabulary, saved as transformers saves it."""
    directory = tmp_path_factory.mktemp("hf")
    config = transformers.LlamaConfig(vocab_size=V, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                      initializer_range=0.1)   # sharp enough that the top 4 are far from ties
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def caches(hf_dir, tmp_path_factory):
    """kd_tiny's two kd sources cached by the hf: backend and by the JAX backend, in float32."""
    root = tmp_path_factory.mktemp("caches")
    cfg = apply_overrides(load_recipe(KD_TINY), SMALL)
    for backend in ("native", "jax"):
        assert cache_teacher(cfg, f"hf:{hf_dir}", root / backend, backend=backend, **WRITE)
    return root


def _assert_same_cache(a: TopKCache, b: TopKCache, atol=1e-5):
    assert len(a) == len(b) > 0
    for i in range(len(a)):
        ra, rb = a[i], b[i]
        for field in SEQUENCE_FIELDS:
            np.testing.assert_array_equal(ra[field], rb[field], err_msg=f"record {i} {field}")
        np.testing.assert_array_equal(ra["teacher_ids"], rb["teacher_ids"], err_msg=f"record {i}")
        np.testing.assert_allclose(ra["teacher_logprobs"], rb["teacher_logprobs"], atol=atol, rtol=0)
        np.testing.assert_allclose(ra["teacher_tail"], rb["teacher_tail"], atol=atol, rtol=0)


def _packed(lengths: list[int]) -> dict[str, np.ndarray]:
    """One row of documents of these lengths, then padding (segment 0)."""
    rng = np.random.default_rng(sum(lengths))
    segments = np.concatenate([np.full(n, s + 1) for s, n in enumerate(lengths)] + [np.zeros(L - sum(lengths))])
    positions = np.concatenate([np.arange(n) for n in lengths] + [np.zeros(L - sum(lengths))])
    inputs = rng.integers(1, V, L)
    return {"inputs": inputs.astype(np.int32), "targets": np.roll(inputs, -1).astype(np.int32),
            "segment_ids": segments.astype(np.int32), "positions": positions.astype(np.int32),
            "loss_mask": (segments > 0).astype(np.int32)}


def test_one_forward_over_packed_rows_reads_each_document_alone(hf_dir):
    """Rows packing several documents (and padding) through one jitted forward give, position by position, the
    top-k of transformers run on each document by itself: the segment ids keep the documents apart."""
    from bitjax.teachers.backends import HFTeacher
    from bitjax.teachers.jax_teacher import JaxTeacher

    cfg = apply_overrides(load_recipe(KD_TINY), SMALL)
    teacher = JaxTeacher(f"hf:{hf_dir}", cfg, K)
    assert teacher.local_rows == 4
    rows = [_packed([10, 7, 15]), _packed([32]), _packed([5, 21])]          # 3 rows + 1 padding row
    ids, logp, tail = (np.asarray(a) for a in teacher.topk_rows(rows))
    assert ids.shape == (4, L, K) and logp.shape == (4, L, K) and tail.shape == (4, L)
    hf = HFTeacher(hf_dir)
    for r, row in enumerate(rows):
        want_ids, want_logp, want_tail = example_topk(lambda t: hf.topk(t, K), row, K)
        np.testing.assert_array_equal(ids[r], want_ids, err_msg=f"row {r}")
        np.testing.assert_allclose(logp[r], want_logp, atol=1e-5, rtol=0)
        np.testing.assert_allclose(tail[r], want_tail, atol=1e-5, rtol=0)   # -inf on the padding of row 2
    assert np.isneginf(tail[2, 26:]).all() and not logp[2, 26:].any() and not ids[2, 26:].any()
    # read as one document, the row's third document would see the first two: other top-k
    joined = {**rows[0], "segment_ids": np.ones(L, np.int32), "positions": np.arange(L, dtype=np.int32)}
    joined_ids = np.asarray(teacher.topk_rows([joined])[0])[0]
    assert not np.array_equal(joined_ids[17:], ids[0, 17:])


def test_the_jax_cache_equals_the_hf_backends_cache(caches, hf_dir):
    """Every record of both sources: the same sequences, top-k ids equal, log-probs and tail within 1e-5."""
    multi = []
    for source in ("natural", "rephrased"):
        native, jax_cache = TopKCache(caches / "native" / source), TopKCache(caches / "jax" / source)
        assert jax_cache.spec.teacher == f"jax:hf:{hf_dir.name}" and native.spec.teacher == f"hf:{hf_dir.name}"
        assert {**vars(jax_cache.spec), "teacher": ""} == {**vars(native.spec), "teacher": ""}
        _assert_same_cache(native, jax_cache)
        multi += [(source, i) for i in range(len(jax_cache)) if jax_cache[i]["segment_ids"].max() > 1]
    assert multi, "no cached row packs two documents: the comparison would not cover segment masking"


def test_two_writer_processes_give_the_cache_one_writes(caches, hf_dir, tmp_path, capsys):
    """process_index 1 then 0 of 2 (each writing its shards) against the one-process JAX cache; the progress
    bar counts tokens per second."""
    cfg = apply_overrides(load_recipe(KD_TINY), SMALL)
    out = tmp_path / "two"
    first = cache_teacher(cfg, f"hf:{hf_dir}", out, backend="jax", process_index=1, process_count=2,
                          **{**WRITE, "progress": True})
    assert first == {} and not (out / "natural" / "manifest.json").exists()
    assert sorted(p.name for p in (out / "natural").glob("*.done.json")) == [
        shard_name(1, 2).replace(".arrayrecord", ".done.json")]
    assert "tok/s" in capsys.readouterr().err
    second = cache_teacher(cfg, f"hf:{hf_dir}", out, backend="jax", process_index=0, process_count=2, **WRITE)
    assert set(second) == {"natural", "rephrased"}
    for source in second:
        _assert_same_cache(TopKCache(caches / "jax" / source), TopKCache(out / source), atol=0)


def test_a_teacher_with_another_vocabulary_is_refused_before_its_weights(tmp_path):
    """Only config.json is read: the check comes before any weight (none exist here) or the data pipeline."""
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text(json.dumps({
        "model_type": "llama", "vocab_size": 100, "hidden_size": 32, "intermediate_size": 64,
        "num_hidden_layers": 1, "num_attention_heads": 2}))
    cfg = apply_overrides(load_recipe(KD_TINY), SMALL)
    with pytest.raises(ConfigError, match=r"the teacher has a vocabulary of 100 tokens, the student "
                                          r"\(model.vocab_size\) 2048") as e:
        cache_teacher(cfg, f"hf:{tmp_path / 'hf'}", tmp_path / "c", backend="jax", **WRITE)
    assert "\n" not in str(e.value) and not (tmp_path / "c").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_processes(teacher: str, out: Path) -> None:
    """`bitjax cache-teacher --backend jax` in two processes joined by jax.distributed, 2 CPU devices each."""
    cmd = [sys.executable, "-m", "bitjax.cli", "cache-teacher", KD_TINY, "--teacher", teacher,
           "--backend", "jax", "--out", str(out), "--k", str(K), "--examples", str(WRITE["n_examples"]),
           "--shards", "3", "--logprob-dtype", "float32"]
    for override in SMALL + ["mesh.data=1", "mesh.fsdp=2", "mesh.tensor=2"]:
        cmd += ["--set", override]
    address = f"127.0.0.1:{_free_port()}"
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT), JAX_COORDINATOR_ADDRESS=address,
               JAX_NUM_PROCESSES="2", XLA_FLAGS="--xla_force_host_platform_device_count=2")
    procs = [subprocess.Popen(cmd, cwd=ROOT, env={**env, "JAX_PROCESS_ID": str(i)}, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i in range(2)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    for p, output in zip(procs, outputs):
        assert p.returncode == 0, output[-3000:]
        assert "(data 1, fsdp 2, tensor 2) mesh of 4 devices in 2 process(es), 4 rows per forward" in output


def test_two_jax_processes_on_a_sharded_mesh_write_the_cache_one_process_writes(caches, hf_dir, tmp_path):
    """Two processes joined by jax.distributed (2 CPU devices each, gloo), the teacher's parameters split over
    fsdp and tensor, each process feeding its rows to the global forward and writing its own shards (three
    shards: process 0 has twice the rows of process 1, which keeps step with padding rows): the cache equals
    the one-process cache (ids equal; log-probs to 1e-5, as the mesh changes float32 summation order)."""
    _two_processes(f"hf:{hf_dir}", tmp_path / "two_processes")
    for source in ("natural", "rephrased"):
        _assert_same_cache(TopKCache(caches / "jax" / source), TopKCache(tmp_path / "two_processes" / source))


@pytest.mark.slow
def test_two_jax_processes_with_a_bitjax_run_as_the_teacher(tmp_path):
    """A `bitjax:RUN_DIR` teacher in two processes: each restores the run onto its own devices, reads it to the
    host and places it on the global mesh (restoring onto all devices could not be read back to a host)."""
    from bitjax.training import train

    cfg = apply_overrides(load_recipe(KD_TINY), SMALL + ["model.n_layers=1"])
    tiny = apply_overrides(load_recipe(ROOT / "recipes" / "tiny.py"), [
        "model.quant=none", "model.n_layers=1", "data.seq_len=32", "data.batch_size=4", "steps=2", "eval_batches=1"])
    train(tiny, tmp_path / "teacher", progress=False)
    teacher = f"bitjax:{tmp_path / 'teacher'}"
    cache_teacher(cfg, teacher, tmp_path / "one_process", backend="jax", **WRITE)
    _two_processes(teacher, tmp_path / "two_processes")
    for source in ("natural", "rephrased"):
        _assert_same_cache(TopKCache(tmp_path / "one_process" / source), TopKCache(tmp_path / "two_processes" / source))
