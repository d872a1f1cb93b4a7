"""Evaluation of a trained run: held-out perplexity on text the run never trained on."""

from __future__ import annotations

import math
from pathlib import Path

import jax
import numpy as np

from bitjax import data as data_lib
from bitjax.checkpoint import Checkpointer
from bitjax.config import ConfigError, load_run_config
from bitjax.tokenizer import fingerprint, load
from bitjax.train import Trainer


def load_trained(run_dir: str | Path, step: int | None = None):
    """(TrainConfig, Trainer, TrainState, step) of a run directory's latest (or given) checkpoint."""
    cfg = load_run_config(run_dir)
    trainer = Trainer.create(cfg)
    ckpt = Checkpointer(Path(run_dir) / "checkpoints", cfg)
    step = ckpt.latest_step() if step is None else step
    if step is None:
        raise ConfigError(f"{run_dir}/checkpoints holds no checkpoint; train first: bitjax train RECIPE "
                          f"--workdir {run_dir}")
    state = ckpt.restore_state(step, trainer.abstract_state())
    ckpt.close()
    return cfg, trainer, state, step


def heldout_perplexity(run_dir: str | Path, n_batches: int = 16) -> dict:
    """Token-weighted cross-entropy and perplexity of the run's model on its corpus's held-out tail."""
    cfg, trainer, state, step = load_trained(run_dir)
    pipeline = data_lib.build_pipeline(cfg.data)
    run_tokenizer = Path(run_dir) / "tokenizer.json"
    if run_tokenizer.exists() and fingerprint(load(run_tokenizer)) != pipeline.tokenizer_fingerprint:
        raise ConfigError(f"{run_tokenizer} differs from the tokenizer the data pipeline builds now; "
                          "evaluate with the tokenizer the run was trained with")
    eval_fn = jax.jit(trainer.eval_loss)
    total, count = 0.0, 0.0
    batches = pipeline.heldout_batches(n_batches)
    for batch in batches:
        s, n = eval_fn(state.params, batch)
        total, count = total + float(s), count + float(n)
    loss = total / max(count, 1.0)
    return {"run": str(run_dir), "step": step, "heldout_tokens": int(count), "heldout_batches": len(batches),
            "heldout_loss": loss, "heldout_perplexity": math.exp(loss),
            "bits_per_token": loss / math.log(2)}


def print_report(report: dict) -> None:
    width = max(len(k) for k in report)
    for key, value in report.items():
        shown = f"{value:.4f}" if isinstance(value, float) else value
        print(f"  {key:<{width}}  {shown}")
