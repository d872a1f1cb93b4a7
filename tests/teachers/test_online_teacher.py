"""The online teacher: a frozen full-precision bitjax model run inside the train step, giving the top-k a
cache would hold, and the same loss as the cached path."""

import dataclasses
import json
from pathlib import Path

import jax
import numpy as np
import pytest

from bitjax.config import apply_overrides, load_recipe
from bitjax.errors import ConfigError
from bitjax.run import Run
from bitjax.teachers import online as online_teacher
from bitjax.teachers.backends import topk_from_logits
from bitjax.training import Trainer, train
from tests.support import ROOT

TINY = str(ROOT / "recipes" / "tiny.py")
SHAPE = ["model.n_layers=2", "data.seq_len=64", "data.batch_size=4", "log_every=1", "eval_batches=1",
         "eval_every=1000", "loss_chunk=16"]


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    """A small full-precision model trained a few steps on the tiny recipe's data: the teacher."""
    workdir = tmp_path_factory.mktemp("teacher")
    train(apply_overrides(load_recipe(TINY), SHAPE + ["model.quant=none", "steps=8"]), workdir, progress=False)
    return workdir


def _student(teacher_run, *extra):
    cfg = apply_overrides(load_recipe(TINY), SHAPE + [
        f"distill.teacher=bitjax:{teacher_run}", "distill.k=8", "distill.online=true", *extra])
    sources = tuple(dataclasses.replace(s, objective="kd") for s in cfg.data.sources)
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, sources=sources))


def _batch(cfg, seed=0):
    rng = np.random.default_rng(seed)
    B, L = cfg.data.batch_size, cfg.data.seq_len
    tokens = rng.integers(0, cfg.model.vocab_size, (B, L + 1)).astype(np.int32)
    segments = np.ones((B, L), np.int32)
    segments[:, L // 2:] = 2                      # two packed documents per row
    positions = np.concatenate([np.arange(L // 2), np.arange(L - L // 2)]).astype(np.int32)
    return {"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "segment_ids": segments,
            "positions": np.broadcast_to(positions, (B, L)).copy(), "loss_mask": np.ones((B, L), np.int32),
            "source_id": np.zeros((B,), np.int32)}


def test_online_topk_equals_the_cache_writers_topk(teacher_run):
    """What `bitjax cache-teacher --teacher bitjax:RUN` computes (numpy, float64 normaliser) on the teacher's
    logits equals what the step computes on the devices, block by block."""
    cfg = _student(teacher_run)
    teacher = online_teacher.load(f"bitjax:{teacher_run}", cfg.model, Trainer.create(cfg).mesh)
    model = teacher.model(teacher.params)
    batch = _batch(cfg)
    logits = np.asarray(Run(teacher_run).model()(batch["inputs"], batch["segment_ids"], batch["positions"]))
    ids, logp, tail = topk_from_logits(logits, 8)
    got = jax.device_get(online_teacher.topk_fields(model, batch, 8, loss_chunk=16))
    np.testing.assert_array_equal(got["teacher_ids"], ids)
    np.testing.assert_allclose(got["teacher_logprobs"], logp, atol=2e-5)
    np.testing.assert_allclose(got["teacher_tail"], tail, atol=2e-5)


def test_online_step_loss_equals_the_cached_path_at_k_equal_vocab(teacher_run):
    """At k = V the online top-k is the whole distribution: the step's loss equals the loss on a batch that
    carries the same teacher fields as a cache would (full-vocabulary KD either way)."""
    V = load_recipe(TINY).model.vocab_size
    online_cfg = _student(teacher_run, f"distill.k={V}")
    online = Trainer.create(online_cfg, load_teacher=True)
    state = online.init_state()
    batch = _batch(online_cfg, seed=1)
    loss_online, parts_online = jax.jit(online.loss)(state.params, batch, 1.0, 100, online.teacher.params)

    logits = np.asarray(Run(teacher_run).model()(batch["inputs"], batch["segment_ids"], batch["positions"]))
    ids, logp, tail = topk_from_logits(logits, V)
    cached_batch = {**batch, "teacher_ids": ids, "teacher_logprobs": logp, "teacher_tail": tail}
    cached = Trainer.create(_student(teacher_run, f"distill.k={V}", "distill.online=false", "distill.cache=unread"))
    loss_cached, parts_cached = jax.jit(cached.loss)(state.params, cached_batch, 1.0, 100)
    np.testing.assert_allclose(float(loss_online), float(loss_cached), rtol=1e-5)
    np.testing.assert_allclose(float(parts_online["kd"]), float(parts_cached["kd"]), rtol=1e-4)
    assert float(parts_online["kd"]) > 0.1        # a random student is far from the teacher


def test_training_with_an_online_teacher_reads_no_cache_and_logs_kd(teacher_run, tmp_path):
    cfg = _student(teacher_run, "steps=3", "distill.cache=/nonexistent/cache")
    summary = train(cfg, tmp_path / "student", progress=False)
    assert summary["steps"] == 3
    lines = (tmp_path / "student" / "metrics.jsonl").read_text().splitlines()
    assert any('"kd"' in line for line in lines)
    assert not list((tmp_path / "student" / "checkpoints").rglob("*teacher*"))   # never saved


def test_a_teacher_with_another_vocabulary_is_one_line(teacher_run):
    cfg = _student(teacher_run, "model.vocab_size=4096", "data.vocab_size=2048")
    with pytest.raises(ConfigError, match=r"the teacher has a vocabulary of \d+ tokens, the student 4096") as e:
        online_teacher.load(f"bitjax:{teacher_run}", cfg.model, Trainer.create(cfg).mesh)
    assert "\n" not in str(e.value)


def test_online_without_a_teacher_is_one_line():
    with pytest.raises(ConfigError, match="distill.online=true needs a teacher"):
        apply_overrides(load_recipe(TINY), ["distill.online=true"])


def _relation_student(teacher_run, *extra):
    return apply_overrides(_student(teacher_run, *extra), ["distill.relation_weight=0.5", "distill.relation_heads=4"])


def test_relation_loss_is_zero_for_the_teacher_itself_and_adds_its_weight(teacher_run):
    """A student holding the teacher's own parameters (full precision) has relation 0 (and KD 0); a ternary
    student has a positive relation loss, and the batch loss grows by exactly relation_weight times it."""
    cfg = _relation_student(teacher_run, "model.quant=none")
    trainer = Trainer.create(cfg, load_teacher=True)
    batch = _batch(cfg, seed=2)
    loss_fn = jax.jit(trainer.loss)
    _, parts = loss_fn(trainer.teacher.params, batch, 1.0, 100, trainer.teacher.params)
    assert abs(float(parts["relation"])) < 1e-6 and abs(float(parts["kd"])) < 1e-5

    ternary = Trainer.create(_relation_student(teacher_run), load_teacher=True)
    params = ternary.init_state().params
    loss, parts = jax.jit(ternary.loss)(params, batch, 1.0, 100, ternary.teacher.params)
    off = Trainer.create(_student(teacher_run), load_teacher=True)
    loss_off, parts_off = jax.jit(off.loss)(params, batch, 1.0, 100, off.teacher.params)
    assert float(parts["relation"]) > 1e-3 and "relation" not in parts_off
    # one "kd" source holds every row, loss weight 1: the relation term enters the loss once, times its weight
    np.testing.assert_allclose(float(loss) - float(loss_off), 0.5 * float(parts["relation"]), rtol=1e-4)


def _tensorboard_tags(tb_dir: Path) -> set[str]:
    """Scalar tags of tensorboardX event files (TFRecord framing: length, crc, Event proto, crc)."""
    from tensorboardX.proto.event_pb2 import Event

    tags = set()
    for path in tb_dir.iterdir():
        data = path.read_bytes()
        at = 0
        while at < len(data):
            n = int.from_bytes(data[at:at + 8], "little")
            event = Event.FromString(data[at + 12:at + 12 + n])
            tags |= {v.tag for v in event.summary.value}
            at += 12 + n + 4
    return tags


def test_training_with_the_relation_loss_logs_it(teacher_run, tmp_path):
    cfg = _relation_student(teacher_run, "steps=2", "model.int8_matmul=false", "model.full_precision_layers=0")
    train(cfg, tmp_path / "student", progress=False)
    lines = [json.loads(line) for line in (tmp_path / "student" / "metrics.jsonl").read_text().splitlines()]
    assert all(line["relation"] > 0 for line in lines if "loss" in line)
    assert "train/relation" in _tensorboard_tags(tmp_path / "student" / "tb")


def test_relation_loss_settings_are_checked_in_one_line(teacher_run):
    with pytest.raises(ConfigError, match="relation_weight=0.5 needs the teacher's attention in the same step: "
                                          "set distill.online=true") as e:
        apply_overrides(load_recipe(TINY), ["distill.relation_weight=0.5"])
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="no data source has objective \"kd\""):
        apply_overrides(load_recipe(TINY), [f"distill.teacher=bitjax:{teacher_run}", "distill.online=true",
                                            "distill.relation_weight=0.5"])
    with pytest.raises(ConfigError, match="relation_heads=5 does not divide the student's query width"):
        apply_overrides(_student(teacher_run), ["distill.relation_weight=0.5", "distill.relation_heads=5"])
    with pytest.raises(ConfigError, match=r"relation_layer=7 is outside the student's 2 layers"):
        apply_overrides(_student(teacher_run), ["distill.relation_weight=0.5", "distill.relation_layer=7"])
