"""Weights & Biases beside TensorBoard (`log.wandb=true`): the scalars TensorBoard gets, in one W&B run per run
directory.

    wandb_run = WandbRun(cfg, workdir)        # a new W&B run, or the one this directory logged to before
    wandb_run.log(step, {"train/loss": 2.31, "train/lr": 1e-3})
    wandb_run.close()

The W&B run's id is written to RUN_DIR/wandb_run_id (bitjax.run.layout) when the run is new; a resumed run
reads it and W&B resumes that run (`resume="allow"`), so its curves go on where they stopped. W&B's own files
go under RUN_DIR/wandb/ (under W&B's default directory, or WANDB_DIR, when the run directory is a bucket).
Everything else is W&B's: the login (`wandb login`, WANDB_API_KEY), the entity, and WANDB_MODE=offline, which
keeps the run on disk for a later `wandb sync`.
"""

from __future__ import annotations

from etils import epath

from bitjax.config import TrainConfig, to_dict
from bitjax.errors import ConfigError
from bitjax.paths import is_remote, write_atomic
from bitjax.run.layout import RunPaths


class WandbRun:
    """The W&B run of a bitjax run directory (process 0 of the run writes it)."""

    def __init__(self, cfg: TrainConfig, workdir: epath.Path):
        try:
            import wandb
        except ImportError:
            raise ConfigError("log.wandb=true needs the wandb package: pip install 'bitjax[wandb]' (or set "
                              "log.wandb=false)") from None
        id_file = RunPaths(workdir).wandb_run_id
        run_id = id_file.read_text().strip() if id_file.exists() else None
        try:
            self.run = wandb.init(
                project=cfg.log.project, name=cfg.log.name or cfg.name, tags=list(cfg.log.tags),
                config=to_dict(cfg), id=run_id, resume="allow" if run_id else None,
                dir=None if is_remote(workdir) else str(workdir), settings=wandb.Settings(quiet=True))
        except wandb.errors.Error as e:   # no login, a refused project, ...
            first = (str(e).strip().splitlines() or [""])[0]
            raise ConfigError(f"log.wandb=true: W&B could not start a run ({first}); log in with `wandb login`, "
                              "run with WANDB_MODE=offline, or set log.wandb=false") from None
        if run_id is None:
            write_atomic(id_file, self.run.id.encode())

    @property
    def id(self) -> str:
        return self.run.id

    def log(self, step: int, scalars: dict[str, float]) -> None:
        """`scalars` by their TensorBoard tags, at `step`."""
        self.run.log(scalars, step=step)

    def close(self) -> None:
        self.run.finish()
