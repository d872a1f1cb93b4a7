"""`log.wandb=true`: the scalars TensorBoard gets go to one Weights & Biases run per run directory, which a resume
goes on logging to. Offline (WANDB_MODE=offline): the W&B run stays on disk under RUN_DIR/wandb/."""

import json
import sys

import pytest

from bitjax.config import apply_overrides, load_recipe
from bitjax.training import train
from tests.support import TINY

wandb_files = pytest.importorskip("tests.support.wandb_files", reason="the wandb extra is not installed")

FAST = ["model.n_layers=2", "data.seq_len=64", "data.batch_size=8", "log_every=1", "eval_every=1000",
        "eval_batches=1", "optim.warmup_steps=5", "checkpoint.every=2"]
WANDB = ["log.wandb=true", "log.project=bitjax-tests", "log.name=tiny-wandb", "log.tags=tiny,offline"]


def test_without_the_wandb_package_log_wandb_is_one_line(tmp_path, monkeypatch):
    from bitjax.errors import ConfigError
    from bitjax.training.wandb_run import WandbRun

    monkeypatch.setitem(sys.modules, "wandb", None)   # as if not installed: `import wandb` raises ImportError
    with pytest.raises(ConfigError, match=r"^log.wandb=true needs the wandb package: pip install 'bitjax\[wandb\]'"):
        WandbRun(apply_overrides(load_recipe(TINY), WANDB), tmp_path)
    assert not (tmp_path / "wandb_run_id").exists()


def test_an_offline_wandb_run_holds_loss_and_lr_and_a_resume_logs_to_the_same_run(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    workdir = tmp_path / "run"
    cfg = apply_overrides(load_recipe(TINY), FAST + WANDB + ["steps=2"])
    train(cfg, workdir, progress=False)
    train(apply_overrides(cfg, ["steps=3"]), workdir, progress=False)   # resumes from step 2

    run_id = (workdir / "wandb_run_id").read_text()
    logs = sorted((workdir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert [p.name for p in logs] == [f"run-{run_id}.wandb"] * 2    # two sessions, one W&B run
    (first, history), (resumed, resumed_history) = (wandb_files.run_and_history(p) for p in logs)
    assert first.run_id == resumed.run_id == run_id
    assert (first.project, first.display_name, list(first.tags)) == ("bitjax-tests", "tiny-wandb", ["tiny", "offline"])

    # the same scalars, by the same tags, as TensorBoard and metrics.jsonl got
    metrics = {}
    for record in map(json.loads, (workdir / "metrics.jsonl").read_text().splitlines()):
        metrics.setdefault(record["step"], {}).update(record)
    assert sorted(history) == [1, 2] and sorted(resumed_history) == [3]
    for step, logged in {**history, **resumed_history}.items():
        assert logged["train/loss"] == pytest.approx(metrics[step]["loss"], rel=1e-6)
        assert logged["train/lr"] == pytest.approx(metrics[step]["lr"], rel=1e-6)
        assert {k for k in logged if k.startswith("zeros/")} == {k for k in metrics[step] if k.startswith("zeros/")}
