"""Orbax checkpoints holding one run's whole state: train state, Grain iterator position and run metadata.

Layout under `WORKDIR/checkpoints/<step>/`:
  state/   the TrainState pytree (step, params, opt_state), Orbax StandardSave (tensorstore, no pickle)
  data/    the Grain iterator state, one JSON file per process (positions of its data shards)
  meta/    JSON: the full TrainConfig and the tokenizer fingerprint, read before anything is restored
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import grain
import orbax.checkpoint as ocp

from bitjax.config import ConfigError, TrainConfig
from bitjax.data import shards as shards_lib
from bitjax.model import ModelConfig


class Checkpointer:
    def __init__(self, directory: str | Path, cfg: TrainConfig):
        self.directory = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=cfg.checkpoint.keep,
            enable_async_checkpointing=cfg.checkpoint.async_save,
            create=True,
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state, data_iterator, meta: dict) -> None:
        self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                data=grain.checkpoint.CheckpointSave(data_iterator),
                meta=ocp.args.JsonSave(meta),
            ),
            force=True,
        )

    def read_meta(self, step: int) -> dict:
        return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

    def restore(self, step: int, abstract_state, data_iterator):
        """State into `abstract_state`'s shardings (any mesh), and the data position.

        Grain writes one iterator file per process; each holds the position of that process's data
        shards (bitjax.data.shards). They are merged, so any process count that divides the shard count
        restores the same global data position.
        """
        state = self.restore_state(step, abstract_state)
        data_iterator.set_state(shards_lib.merge_states(self.directory / str(step) / "data"))
        return state

    def saved_data_shards(self, step: int) -> int | None:
        """The number of data shards the checkpoint at `step` was written with."""
        return shards_lib.saved_num_shards(self.directory / str(step) / "data")

    def restore_state(self, step: int, abstract_state):
        """Only the TrainState (for evaluation and export); the data position is left alone."""
        restored = self.manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state)))
        return restored["state"]

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()


def check_compatible(meta: dict, cfg: TrainConfig, tokenizer_fingerprint: str, workdir: Path) -> None:
    """Refuse to resume a checkpoint made for another model shape or tokenizer, with the fix in one line."""
    # remat changes how the step is computed, not the parameters: a run may resume with it toggled.
    saved_model = ModelConfig(**{**meta["config"]["model"], "remat": cfg.model.remat})
    if saved_model != cfg.model:
        diffs = [f"{f.name} {getattr(saved_model, f.name)} != {getattr(cfg.model, f.name)}"
                 for f in dataclasses.fields(ModelConfig)
                 if getattr(saved_model, f.name) != getattr(cfg.model, f.name)]
        raise ConfigError(
            f"workdir {workdir} holds a checkpoint of a different model (checkpoint vs recipe: "
            f"{'; '.join(diffs)}); pass a new --workdir, or delete {workdir / 'checkpoints'} to start over")
    if meta.get("tokenizer_fingerprint") not in (None, tokenizer_fingerprint):
        raise ConfigError(
            f"workdir {workdir} was trained with tokenizer {meta['tokenizer_fingerprint']}, this run uses "
            f"{tokenizer_fingerprint}; pass a new --workdir or use the same data.vocab_size and corpus")


def meta_for(cfg: TrainConfig, tokenizer_fingerprint: str) -> dict:
    return {"config": dataclasses.asdict(cfg), "tokenizer_fingerprint": tokenizer_fingerprint}


def dump_meta(meta: dict) -> str:
    return json.dumps(meta, indent=2, sort_keys=True)
