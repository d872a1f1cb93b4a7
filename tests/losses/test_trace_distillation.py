"""The "trace_kd" objective: KD against the online teacher's top-k on the completions of positive traces."""

import dataclasses
import json

import numpy as np
import pytest

from bitjax.config import SourceConfig, apply_overrides, load_recipe
from bitjax.errors import ConfigError
from bitjax.losses import objectives, reference
from bitjax.training import train
from tests.losses.test_objective import config_with, random_batch
from tests.support import ROOT, TINY

TRACES = f"traces:{ROOT / 'data' / 'traces' / 'train.jsonl'}"
SHAPE = ["model.n_layers=1", "data.seq_len=64", "data.batch_size=4", "log_every=1", "eval_batches=1",
         "eval_every=1000", "loss_chunk=32"]


def test_its_loss_mixes_kd_and_ce_over_the_completion_tokens():
    cfg = load_recipe(TINY)
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, sources=(
        SourceConfig("traces", TRACES, objective="trace_kd"),)), distill=dataclasses.replace(
        cfg.distill, kd_weight=0.7, online=True, teacher="gguf:smollm2"))
    logits, batch = random_batch([0] * 6)
    table = objectives.SourceObjectives.from_config(cfg)
    loss, metrics = reference.batch_loss_from_logits(logits, batch, table, cfg.distill, 0)
    mask = batch["loss_mask"]
    kd = reference.sparse_kd_loss(logits, batch["teacher_ids"], batch["teacher_logprobs"], mask,
                                  batch["teacher_tail"])
    ce = reference.cross_entropy(logits, batch["targets"], mask)
    np.testing.assert_allclose(loss, 0.7 * kd + 0.3 * ce, rtol=1e-5)
    np.testing.assert_allclose(metrics["kd"], kd, rtol=1e-5)
    assert table.needs(cfg.distill) == objectives.Needs(teacher_topk=True)


def test_without_an_online_teacher_it_is_refused_in_one_line():
    with pytest.raises(ConfigError, match="only an online teacher computes; set --set distill.online=true"):
        config_with(SourceConfig("traces", TRACES, objective="trace_kd"))


def test_the_step_gives_trace_rows_the_online_teachers_top_k(tmp_path):
    """Trained end to end: the online teacher's top-k reaches the trace rows (a finite `kd` part every step)."""
    teacher = tmp_path / "teacher"
    train(apply_overrides(load_recipe(TINY), SHAPE + ["model.quant=none", "steps=2"]), teacher, progress=False)
    cfg = apply_overrides(load_recipe(TINY), SHAPE + ["steps=3", f"distill.teacher=bitjax:{teacher}",
                                                      "distill.online=true", "distill.k=8",
                                                      f"data.tokenizer={teacher / 'tokenizer.json'}"])
    traces = SourceConfig("traces", TRACES, objective="trace_kd")
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, sources=(traces,)))
    train(cfg, tmp_path / "student", progress=False)
    logged = [json.loads(line) for line in (tmp_path / "student" / "metrics.jsonl").read_text().splitlines()]
    kd = [r["kd"] for r in logged if "kd" in r]
    assert len(kd) == 3 and all(np.isfinite(kd)) and all(v > 0 for v in kd)
