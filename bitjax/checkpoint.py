"""Orbax checkpoints holding one run's whole state: train state, Grain iterator position and run metadata.

Layout under `WORKDIR/checkpoints/<step>/`:
  state/   the TrainState pytree (step, params, opt_state), Orbax StandardSave (tensorstore, no pickle)
  data/    the Grain iterator state, one JSON file per process
  meta/    JSON: the full TrainConfig and the tokenizer fingerprint, read before anything is restored
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import grain
import jax
import orbax.checkpoint as ocp

from bitjax.config import ConfigError, TrainConfig
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

        Grain keeps one iterator file per process. Restored with the process count it was saved with,
        each process gets its own; with another count (say 2 hosts -> 1), see `_reposition_data`.
        """
        data_dir = self.directory / str(step) / "data"
        own_file = data_dir / f"process_{jax.process_index()}-of-{jax.process_count()}.json"
        if own_file.exists() or not data_dir.is_dir():
            restored = self.manager.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract_state),
                    data=grain.checkpoint.CheckpointRestore(data_iterator),
                ),
            )
            return restored["state"]
        state = self.restore_state(step, abstract_state)
        _reposition_data(data_iterator, data_dir, step)
        return state

    def restore_state(self, step: int, abstract_state):
        """Only the TrainState (for evaluation and export); the data position is left alone."""
        restored = self.manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state)))
        return restored["state"]

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()


def _reposition_data(data_iterator, data_dir: Path, step: int) -> None:
    """Continue the data stream of a checkpoint saved by a different number of processes.

    Index-sharded Grain pipelines (`ds[process_index::process_count].batch(B / count)`) save the same
    state on every process, the number of batches consumed, and that number means the same global
    position for any process count: the saved state is set as is. Otherwise the iterator is advanced
    by `step` batches, which reproduces the position of any deterministic pipeline, at a cost.
    """
    states = [json.loads(p.read_text()) for p in sorted(data_dir.glob("process_*-of-*.json"))]
    fresh = data_iterator.get_state()
    if states and all(s == states[0] for s in states) and set(states[0]) == set(fresh):
        data_iterator.set_state(states[0])
        print(f"data position of step {step} taken from a {len(states)}-process checkpoint", flush=True)
        return
    print(f"checkpoint {step} was written by {len(states)} processes with differing data states; "
          f"advancing the data iterator by {step} batches", flush=True)
    for _ in range(step):
        next(data_iterator)


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
