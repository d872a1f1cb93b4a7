"""The run directory's layout, in one place, and the config it was trained with.

Layout of a run directory (written by `bitjax train`, process 0):
  config.json            the TrainConfig and the tokenizer fingerprint (bitjax.training.checkpointer.meta_for)
  tokenizer.json         the tokenizer the run trains with, so the directory is self-contained
  checkpoints/<step>/    Orbax checkpoints: state, data position, metadata (bitjax.training.checkpointer)
  metrics.jsonl, tb/     scalars (bitjax.training.outputs), with loss_curve.png and summary.json at the end
  wandb_run_id, wandb/   with log.wandb: the W&B run's id (a resume logs to it) and W&B's own files
                         (bitjax.training.wandb_run)
  answers.jsonl          greedy answers written by `bitjax eval`
  train.lock             held by the one trainer writing the directory (bitjax.training.lock)
  process_logs/<i>/      the logs of process i > 0 of a multi-host run
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from etils import epath

from bitjax.config import TrainConfig, from_dict
from bitjax.errors import ConfigError
from bitjax.paths import user_path


@dataclasses.dataclass(frozen=True)
class RunPaths:
    """Every file a run directory holds, by name."""

    root: epath.Path   # local or a bucket: every file below goes through etils.epath

    @property
    def config(self) -> epath.Path:
        return self.root / "config.json"

    @property
    def tokenizer(self) -> epath.Path:
        return self.root / "tokenizer.json"

    @property
    def checkpoints(self) -> epath.Path:
        return self.root / "checkpoints"

    @property
    def answers(self) -> epath.Path:
        return self.root / "answers.jsonl"

    @property
    def lock(self) -> epath.Path:
        return self.root / "train.lock"

    @property
    def wandb_run_id(self) -> epath.Path:
        return self.root / "wandb_run_id"

    def log_dir(self, process_index: int) -> epath.Path:
        """Where a process writes metrics and TensorBoard files: the root for process 0."""
        return self.root if process_index == 0 else self.root / "process_logs" / str(process_index)


def load_run_config(run_dir: str | Path) -> TrainConfig:
    """The TrainConfig a run directory was trained with (its config.json)."""
    path = RunPaths(user_path(run_dir, "run directory")).config
    if not path.is_file():
        raise ConfigError(f"{path} does not exist: {run_dir} is not a bitjax run directory (train into it first)")
    try:
        values = json.loads(path.read_text())["config"]
        if not isinstance(values, dict) or "model" not in values:   # else from_dict would build the defaults
            raise ValueError("its 'config' holds no model section")
        return from_dict(TrainConfig, values)
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ConfigError(f"{path} is not a readable run config ({type(e).__name__}: {e}); restore it from a "
                          "checkpoint's meta/ directory or train into a new --workdir") from None


def checkpoint_steps(checkpoints: epath.Path) -> list[int]:
    """The steps with a checkpoint directory, ascending."""
    if not checkpoints.is_dir():
        return []
    return sorted(int(p.name) for p in checkpoints.iterdir() if p.name.isdigit() and p.is_dir())
