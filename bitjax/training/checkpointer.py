"""Orbax checkpoints holding one run's whole state: train state, Grain iterator position and run metadata.

Layout under `WORKDIR/checkpoints/<step>/`:
  state/   the TrainState pytree (step, params, opt_state), Orbax StandardSave (tensorstore, no pickle)
  data/    the Grain iterator state, one JSON file per process (positions of its data shards)
  meta/    JSON: the full TrainConfig, the tokenizer fingerprint and checksums of every state array
           (bitjax.run.checksums), read before anything is restored and checked after
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import re
from pathlib import Path

import grain
import orbax.checkpoint as ocp
from etils import epath

from bitjax.config import TrainConfig
from bitjax.data import shards as shards_lib
from bitjax.errors import BitjaxError, ConfigError, TrainingError
from bitjax.nn.model_config import COMPUTE_FIELDS, ModelConfig
from bitjax.paths import absolute, user_path
from bitjax.run import checksums as state_checksum
from bitjax.run import legacy_layers
from bitjax.run.restore_faults import (
    CheckpointDamagedError,
    CheckpointReadError,
    quiet_closed_loop_callbacks,
    raise_classified,
)

__all__ = ["CheckpointDamagedError", "CheckpointReadError", "CheckpointWriteError", "Checkpointer", "resume"]


class CheckpointWriteError(TrainingError):
    """A checkpoint could not be written (disk full, read-only or missing directory, no permission)."""


def _os_error(e: BaseException | None) -> OSError | None:
    """The OSError under an exception, however deep Orbax's async machinery wrapped it."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, OSError):
            return e
        # TensorStore reports a failed write as a ValueError carrying the OS error code in its text
        code = re.search(r"os_error_code='(\d+)'", str(e))
        path = re.search(r'Failed writing: "([^"]+)"', str(e)) or re.search(r'local file "([^"]+)"', str(e))
        if code:
            return OSError(int(code.group(1)), os.strerror(int(code.group(1))), path.group(1) if path else None)
        # a bucket or a file system that says only RESOURCE_EXHAUSTED: out of space, or over a quota
        if str(e).startswith("RESOURCE_EXHAUSTED: Error writing"):
            return OSError(errno.ENOSPC, "out of space or over a quota (RESOURCE_EXHAUSTED)",
                           path.group(1) if path else None)
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


class Checkpointer:
    def __init__(self, directory: str | Path, cfg: TrainConfig):
        self.directory = absolute(user_path(directory, "checkpoint directory"))
        self._writing_step: int | None = None   # the step of the save in flight, for its error message
        quiet_closed_loop_callbacks()   # after a failed save or restore, reads and writes in flight finish late
        options = ocp.CheckpointManagerOptions(
            max_to_keep=cfg.checkpoint.keep,
            enable_async_checkpointing=cfg.checkpoint.async_save,
            create=True,
        )
        with self._writes():
            self.manager = ocp.CheckpointManager(self.directory, options=options)

    @contextlib.contextmanager
    def _writes(self):
        """A write that fails for the file system (ENOSPC, EROFS, EACCES...) becomes one line naming the path
        and the checkpoint that is still good; anything else keeps its traceback."""
        try:
            yield
        except Exception as e:
            os_error = _os_error(e)
            if os_error is None:
                raise
            step = self._writing_step
            good = [s for s in self._step_dirs() if step is None or s < step]
            where = os_error.filename or self.directory
            kept = (f"the last good checkpoint (step {good[-1]}) is intact" if good
                    else "no checkpoint was written before it")
            fix = {errno.ENOSPC: "free space", errno.EDQUOT: "free space or raise the quota",
                   errno.EFBIG: "raise the file-size limit (ulimit -f)"}.get(
                os_error.errno, f"make {self.directory} writable (or free space)")
            raise CheckpointWriteError(
                f"could not write {'checkpoint step ' + str(step) if step is not None else 'checkpoints'} "
                f"in {self.directory}: {os_error.strerror or os_error} ({where}); {kept}. {fix.capitalize()}, "
                "then rerun the same command to resume") from None

    def _step_dirs(self) -> list[int]:
        if not self.directory.is_dir():
            return []
        return sorted(int(p.name) for p in self.directory.iterdir() if p.name.isdigit() and p.is_dir())

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state, data_iterator, meta: dict) -> None:
        with self._writes():   # an earlier async save's failure surfaces here, under its own step
            self.manager.wait_until_finished()
        self._writing_step = step
        meta = {**meta, state_checksum.META_KEY: state_checksum.checksums(state)}
        with self._writes():
            self.manager.save(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(state),
                    data=grain.checkpoint.CheckpointSave(data_iterator),
                    meta=ocp.args.JsonSave(meta),
                ),
                force=True,
            )

    def all_steps(self) -> list[int]:
        """Every step with a checkpoint directory, ascending (an empty or unfinished one included)."""
        return sorted({*self.manager.all_steps(), *self._step_dirs()})

    def restore_checked(self, step: int, read):
        """`read(step)`, with a failure to read the checkpoint's files raised as what it is
        (bitjax.run.restore_faults): CheckpointDamagedError for damage to the files, CheckpointReadError for a
        fault of this machine (memory, I/O, a missing package), anything else as it was raised.

        bitjax's own refusals (another model, another tokenizer) pass unchanged.
        """
        if not (self.directory / str(step)).is_dir() or not any((self.directory / str(step)).iterdir()):
            raise CheckpointDamagedError(step, self.directory, "its directory is empty")
        try:
            return read(step)
        except (CheckpointDamagedError, CheckpointReadError, KeyboardInterrupt):
            raise
        except BitjaxError as e:
            if isinstance(e, ConfigError) and ("data-iterator state" in str(e) or "lacks the state" in str(e)):
                raise CheckpointDamagedError(step, self.directory, str(e)) from None
            raise
        except Exception as e:   # noqa: BLE001 - sorted into damage, a fault of the reader, or a bug
            raise_classified(e, step, self.directory)

    def set_aside(self, step: int) -> epath.Path:
        """Move a damaged step out of the way (never deleted), so the run can save that step again."""
        target = self.directory.parent / "damaged_checkpoints" / f"{step}"
        target.parent.mkdir(parents=True, exist_ok=True)
        n = 1
        while target.exists():
            target, n = target.with_name(f"{step}.{n}"), n + 1
        (self.directory / str(step)).rename(target)
        self.manager.reload()
        return target

    def read_meta(self, step: int) -> dict:
        meta = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        config = meta.get("config") if isinstance(meta, dict) else None
        if not (isinstance(config, dict) and isinstance(config.get("model"), dict)
                and isinstance(config.get("data", {}).get("sources"), list)):
            raise CheckpointDamagedError(step, self.directory, "its meta/ item holds no run config")
        return meta

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
        item_dir = self.directory / str(step) / "state"
        if legacy_layers.has_per_layer_names(item_dir):   # written before the blocks were stacked
            return legacy_layers.restore_stacked(item_dir, abstract_state)
        restored = self.manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state)))
        verify_values(restored["state"], self.read_meta(step), step, self.directory)
        return restored["state"]

    def wait(self) -> None:
        with self._writes():
            self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()


def verify_values(state, meta: dict, step: int, directory: Path) -> None:
    """Refuse values that differ from the checksums saved with them (a flipped bit in a stored array)."""
    bad = state_checksum.mismatches(state, meta)
    if bad:
        raise CheckpointDamagedError(step, directory, f"the stored values of {len(bad)} array(s) do not match "
                                     f"the checksums saved with them, e.g. {bad[0]}")


def check_compatible(meta: dict, cfg: TrainConfig, tokenizer_fingerprint: str, workdir: Path) -> None:
    """Refuse to resume a checkpoint made for another model shape or tokenizer, with the fix in one line."""
    # How the step computes (remat, the int8 matmul, the attention kernel) is not what the parameters are:
    # a run may resume with any of them changed.
    saved_model = ModelConfig(**{**meta["config"]["model"],
                                 **{f: getattr(cfg.model, f) for f in COMPUTE_FIELDS}})
    if saved_model != cfg.model:
        diffs = [f"{f.name} {getattr(saved_model, f.name)} != {getattr(cfg.model, f.name)}"
                 for f in dataclasses.fields(ModelConfig)
                 if getattr(saved_model, f.name) != getattr(cfg.model, f.name)]
        raise ConfigError(
            f"workdir {workdir} holds a checkpoint of a different model (checkpoint vs recipe: "
            f"{'; '.join(diffs)}); train this recipe in a new run beside it (another --workdir), or resume with "
            f"the recipe it was trained with ({workdir / 'config.json'})")
    # A kd source that goes on with its text after its cache reads another stream: the saved data position
    # belongs to the choice it was saved with (restoring it into the other would look like a damaged checkpoint).
    saved = {s["name"]: s.get("on_cache_exhausted", "repeat") for s in meta["config"]["data"]["sources"]}
    changed = [f"{s.name}: {saved[s.name]} -> {s.on_cache_exhausted}" for s in cfg.data.sources
               if s.needs_teacher and saved.get(s.name, s.on_cache_exhausted) != s.on_cache_exhausted]
    if changed and not cfg.distill.online:
        raise ConfigError(
            f"workdir {workdir} was trained with other on_cache_exhausted choices ({'; '.join(changed)}); its saved "
            "data position belongs to them: resume with the choices it was saved with, or pass a new --workdir")
    if meta.get("tokenizer_fingerprint") not in (None, tokenizer_fingerprint):
        raise ConfigError(
            f"workdir {workdir} was trained with tokenizer {meta['tokenizer_fingerprint']}, this run uses "
            f"{tokenizer_fingerprint}; pass a new --workdir or use the same data.vocab_size and corpus")


def meta_for(cfg: TrainConfig, tokenizer_fingerprint: str) -> dict:
    return {"config": dataclasses.asdict(cfg), "tokenizer_fingerprint": tokenizer_fingerprint}


def dump_meta(meta: dict) -> str:
    return json.dumps(meta, indent=2, sort_keys=True)


def resume(checkpointer: Checkpointer, restore_step, *, move_damaged: bool = True):
    """`restore_step(step)` on the newest checkpoint that reads back; damaged newer ones are set aside.

    Returns (step, what restore_step returned), or (None, None) when there is no checkpoint. Each damaged
    step is named in one printed line; when every step is damaged it is one error naming them.
    """
    damaged = []
    for step in reversed(checkpointer.all_steps()):
        try:
            return step, checkpointer.restore_checked(step, restore_step)
        except CheckpointDamagedError as e:
            damaged.append(e)
            where = checkpointer.set_aside(step) if move_damaged else checkpointer.directory / str(step)
            print(f"bitjax: checkpoint step {step} is damaged ({e.reason}); moved to {where}, "
                  "resuming from the step before it", flush=True)
    if damaged:
        raise ConfigError(f"every checkpoint in {checkpointer.directory} is damaged (steps "
                          f"{', '.join(str(e.step) for e in damaged)}, moved to "
                          f"{checkpointer.directory.parent / 'damaged_checkpoints'}); rerun to start from step 0")
    return None, None
