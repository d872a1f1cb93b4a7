"""Training against a teacher cache: the KD term enters the loss and pulls the student to the teacher."""

from pathlib import Path

import numpy as np
import pytest

from bitjax.cache_teacher import cache_teacher
from bitjax.config import ConfigError, apply_overrides, load_recipe
from bitjax.topk_cache import CacheError
from bitjax.train import train

TINY = str(Path(__file__).resolve().parents[1] / "recipes" / "tiny.py")
SMALL = ["model.n_layers=1", "data.seq_len=32", "data.batch_size=4", "eval_batches=1", "log_every=1"]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("kd")
    teacher_cfg = apply_overrides(load_recipe(TINY), SMALL + ["steps=30", "model.quant=none"])
    train(teacher_cfg, root / "teacher", progress=False)
    cache_teacher(teacher_cfg, f"bitjax:{root / 'teacher'}", root / "cache", k=8, n_examples=16, num_shards=2,
                  progress=False)
    return root / "cache"


def _history(workdir):
    import json
    return [json.loads(line) for line in (Path(workdir) / "metrics.jsonl").read_text().splitlines()]


def test_kd_training_logs_kd_and_ce_and_lowers_kd(cache_dir, tmp_path):
    cfg = apply_overrides(load_recipe(TINY), SMALL + ["steps=12", f"distill.cache={cache_dir}",
                                                      "distill.kd_weight=1.0"])
    train(cfg, tmp_path, progress=False)
    history = [r for r in _history(tmp_path) if "kd" in r]
    assert len(history) == 12 and all("ce" in r for r in history)
    np.testing.assert_allclose([r["loss"] for r in history], [r["kd"] for r in history], rtol=1e-6)
    assert history[-1]["kd"] < history[0]["kd"]


def test_kd_weight_mixes_the_terms(cache_dir, tmp_path):
    cfg = apply_overrides(load_recipe(TINY), SMALL + ["steps=2", f"distill.cache={cache_dir}",
                                                      "distill.kd_weight=0.25", "distill.kind=jsd"])
    train(cfg, tmp_path, progress=False)
    r = _history(tmp_path)[0]
    np.testing.assert_allclose(r["loss"], 0.25 * r["kd"] + 0.75 * r["ce"], rtol=1e-5)


def test_cache_for_another_sequence_length_is_refused(cache_dir, tmp_path):
    cfg = apply_overrides(load_recipe(TINY), SMALL + ["data.seq_len=64", f"distill.cache={cache_dir}"])
    with pytest.raises(CacheError, match="set data.seq_len=32 or rebuild the cache"):
        train(cfg, tmp_path, progress=False)


def test_bad_distill_settings():
    with pytest.raises(ConfigError, match="distill.kd_weight=1.5"):
        apply_overrides(load_recipe(TINY), ["distill.kd_weight=1.5"])
    with pytest.raises(ConfigError, match="expected one of forward_kl"):
        apply_overrides(load_recipe(TINY), ["distill.kind=kl"])
