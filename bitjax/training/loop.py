"""The training loop: resume, run the jitted step, and the hooks that log, evaluate and checkpoint.

`train(cfg, workdir)` builds the Trainer (bitjax.training.trainer) and the data pipeline, restores the latest
checkpoint in `workdir` if one exists (model, optimizer, step and the Grain iterator position), then runs to
`cfg.steps`. Everything done every N steps is a `Hook` (levanter's `add_hook(every=N)`): metrics every
`log_every`, held-out loss (and accuracy on `eval_task`'s held-out problems) every `eval_every`, a checkpoint
every `checkpoint.every`, each also at the last step. SIGTERM (a preempted TPU VM) or Ctrl-C (SIGINT) stops
after the current step with one checkpoint of it; rerunning the same command resumes and produces bitwise the
same parameters as an uninterrupted run on the same hardware. The returned summary says which signal stopped
it; the command line exits 0 after SIGTERM and 130 (the shell's code for an interrupt) after Ctrl-C, so
`bitjax train ... && next-step` does not go on.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np
from etils import epath
from tqdm import tqdm

from bitjax import data as data_lib
from bitjax import sharding as sharding_lib
from bitjax import tokenizer as tokenizer_lib
from bitjax.config import TrainConfig
from bitjax.data import coverage
from bitjax.errors import ConfigError
from bitjax.evaluation.task_accuracy import task_accuracy
from bitjax.nn.transformer import count_params
from bitjax.paths import cache_dir, check_checkpoint_store, make_directory, user_path, write_atomic
from bitjax.run import RunPaths
from bitjax.run.chat import ChatModel
from bitjax.training import checkpointer as checkpointer_lib
from bitjax.training import lock, stop_signals
from bitjax.training.nonfinite import NonfiniteGuard
from bitjax.training.outputs import RunLogger, first_value, plot_loss_curve, print_summary
from bitjax.training.trainer import Trainer, zero_fractions
from bitjax.training.wandb_run import WandbRun


def enable_compilation_cache() -> None:
    """Keep compiled steps on disk (JAX's persistent compilation cache) so a preempted or resumed run does not
    compile again for minutes: $JAX_COMPILATION_CACHE_DIR if set, else <bitjax cache>/xla on each host."""
    if not jax.config.jax_compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", str(cache_dir() / "xla"))


def train(cfg: TrainConfig, workdir: str | Path, *, progress: bool = True, devices=None) -> dict:
    """Train (or resume) `cfg` in `workdir`; returns the summary it prints. `devices`: all by default.

    The workdir is locked for the run (bitjax.training.lock): a second trainer on it is refused in one line.
    """
    workdir = user_path(workdir, "workdir")
    check_checkpoint_store(workdir, "workdir")
    sharding_lib.initialize_distributed(cfg.mesh)
    enable_compilation_cache()
    make_directory(workdir, "--workdir")
    with lock.held(RunPaths(workdir).lock, f"workdir {workdir}", enabled=jax.process_index() == 0):
        return TrainLoop(cfg, workdir, progress=progress, devices=devices).run()


@dataclasses.dataclass(frozen=True)
class Hook:
    """`fn(step)`, called after every step that is a multiple of `every`, after the last step, and after the
    first step of this process's run when `first` (so a resumed run logs at once)."""

    every: int
    fn: Callable[[int], None]
    first: bool = False

    def due(self, step: int, first_step: int, last_step: int) -> bool:
        return step % self.every == 0 or step == last_step or (self.first and step == first_step)


class TrainLoop:
    """One run of the loop: the trainer, the data, the state, and the hooks called after each step."""

    def __init__(self, cfg: TrainConfig, workdir: epath.Path, *, progress: bool = True, devices=None):
        self.cfg, self.workdir, self.progress = cfg, workdir, progress
        self.trainer = Trainer.create(cfg, devices, load_teacher=True)
        # an online teacher computes the top-k in the step: its "kd" sources stream plain text, no cache is read
        cache = "" if cfg.distill.online else cfg.distill.cache
        self.pipeline = data_lib.build_pipeline(cfg.data, teacher_cache=cache, vocab_size=cfg.model.vocab_size)
        if self.pipeline.vocab_size > cfg.model.vocab_size:
            raise ConfigError(
                f"tokenizer {self.pipeline.tokenizer_path} has {self.pipeline.vocab_size} tokens but "
                f"model.vocab_size={cfg.model.vocab_size}; set --set model.vocab_size={self.pipeline.vocab_size}")
        if jax.process_index() == 0:
            print(coverage.render(coverage.coverage(cfg, self.pipeline), cfg.steps, cfg.data.on_exhausted),
                  flush=True)
        self.eval_batches = [sharding_lib.replicated_batch(b, self.trainer.mesh)
                             for b in self.pipeline.heldout_batches(cfg.eval_batches)]
        self.meta = checkpointer_lib.meta_for(cfg, self.pipeline.tokenizer_fingerprint)
        self.checkpointer = checkpointer_lib.Checkpointer(workdir / "checkpoints", cfg)
        self.hooks: list[Hook] = []
        self.add_hook(cfg.log_every, self.log_metrics, first=True)
        if self.eval_batches:
            self.add_hook(cfg.eval_every, self.evaluate)
        if cfg.eval_task:
            self.add_hook(cfg.eval_every, self.evaluate_task)
        self.add_hook(cfg.checkpoint.every, self.checkpoint)
        self.pending: list[tuple[int, dict]] = []   # device metrics not yet checked or logged
        self.source_tokens: dict[str, int] = {}     # tokens per data source since the last log line
        self.tokens_since, self.t_last = 0, time.perf_counter()
        self.saved_step: int | None = None           # the newest checkpoint of this run, for messages
        self.guard = NonfiniteGuard(self.trainer.watched_names(), cfg.on_nonfinite, cfg.max_skips_in_a_row)

    def add_hook(self, every: int, fn: Callable[[int], None], *, first: bool = False) -> None:
        """Call `fn(step)` after every `every`-th step and after the last one (in the order hooks were added)."""
        self.hooks.append(Hook(every, fn, first))

    # ---------------------------------------------------------------- start

    def _restore(self, step: int):
        # A resumed run keeps the data shards it started with, whatever the process count is now.
        data_iter = self.pipeline.train_iterator(jax.process_index(), jax.process_count(),
                                                 self.checkpointer.saved_data_shards(step))
        checkpointer_lib.check_compatible(self.checkpointer.read_meta(step), self.cfg,
                                          self.pipeline.tokenizer_fingerprint, self.workdir)
        return self.checkpointer.restore(step, self.trainer.abstract_state(), data_iter), data_iter

    def _start(self) -> int:
        """The step to continue from (0 for a new run), with the state and the data iterator set."""
        # A damaged newest checkpoint is set aside (process 0 moves it) and the one before it is used.
        start_step, restored = checkpointer_lib.resume(self.checkpointer, self._restore,
                                                       move_damaged=jax.process_index() == 0)
        if start_step is not None:
            self.state, self.data_iter = restored
            self.saved_step = start_step
            print(f"resumed from step {start_step} in {self.checkpointer.directory}", flush=True)
            return start_step
        self.data_iter = self.pipeline.train_iterator(jax.process_index(), jax.process_count())
        self.state = self.trainer.init_state(self.cfg.init_from)
        return 0

    # ---------------------------------------------------------------- hooks

    def flush_metrics(self) -> dict:
        """Bring pending metrics to the host; stop at a non-finite step before anything is saved from its state."""
        host = jax.device_get(self.pending)
        self.pending.clear()
        kept = (f"the last finite checkpoint (step {self.saved_step}) is kept in {self.checkpointer.directory}"
                if self.saved_step is not None else "no checkpoint was saved before it")
        for s, m in host:
            self.guard.observe(s, m, kept)
        now = time.perf_counter()
        # parts of the loss whose rows were absent from the last batch are NaN by construction: not logged
        latest = {k: float(v) for k, v in host[-1][1].items()
                  if k == "loss" or (k != "nonfinite" and not np.isnan(v))} if host else {}
        if self.cfg.on_nonfinite == "skip" and host:
            latest["skipped_steps"] = float(self.guard.skipped)
        if host:
            latest["tokens_per_sec"] = self.tokens_since / max(now - self.t_last, 1e-9)
            self.t_last, self.tokens_since = now, 0
        return latest

    def log_metrics(self, step: int) -> None:
        scalars = self.flush_metrics()
        zeros = jax.device_get(self.zeros_fn(self.state.params))   # every kernel's fraction in one transfer
        scalars.update({f"zeros/{k}": float(v) for k, v in zeros.items()})
        scalars.update({f"data/tokens/{k}": float(v) for k, v in self.source_tokens.items()})
        self.source_tokens.clear()
        self.logger.log(step, scalars)
        self.bar.set_postfix(loss=f"{scalars['loss']:.3f}", lr=f"{scalars['lr']:.2e}")

    def evaluate(self, step: int) -> None:
        # one transfer for all batches, not two per batch
        sums = jax.device_get([self.eval_fn(self.state.params, batch) for batch in self.eval_batches])
        total, count = sum(float(s) for s, _ in sums), sum(float(n) for _, n in sums)
        eval_loss = total / max(count, 1.0)
        self.logger.log(step, {"eval/loss": eval_loss, "eval/perplexity": float(np.exp(eval_loss))})

    def evaluate_task(self, step: int) -> None:
        """Greedy accuracy on the run's eval_task (`eval_problems` held-out problems), fully quantized."""
        model = ChatModel(self.trainer.model, self.state.params, tokenizer_lib.load(self.pipeline.tokenizer_path),
                          context=self.cfg.model.max_seq_len, name=self.cfg.name,
                          mesh=self.trainer.mesh if jax.device_count() > 1 else None)
        with self.trainer.mesh_context():
            report = task_accuracy(model, self.cfg.eval_task, n_problems=self.cfg.eval_problems,
                                   max_new_tokens=self.cfg.eval_max_new_tokens,
                                   answers=RunPaths(self.workdir).answers if jax.process_index() == 0 else None)
        self.logger.log(step, {"eval/accuracy": report["pass@1"]})

    def save(self, step: int) -> None:
        self.flush_metrics()
        self.checkpointer.save(step, self.state, self.data_iter, self.meta)
        self.saved_step = step

    def checkpoint(self, step: int) -> None:
        self.save(step)
        self.bar.write(f"step {step}: checkpoint queued in {self.checkpointer.directory}")

    # ---------------------------------------------------------------- run

    def run(self) -> dict:
        cfg, workdir = self.cfg, self.workdir
        start_step = self._start()
        # Process 0 owns the run directory's files; the other processes of a multi-host run log beside it.
        log_dir = RunPaths(workdir).log_dir(jax.process_index())
        if jax.process_index() == 0:
            write_atomic(workdir / "config.json", checkpointer_lib.dump_meta(self.meta).encode())
            # the run directory is self-contained; the tokenizer is a local cache file, read here and written up
            write_atomic(workdir / "tokenizer.json", epath.Path(self.pipeline.tokenizer_path).read_bytes())
        step_fn = self.trainer.jit_train_step()
        self.eval_fn = jax.jit(self.trainer.eval_loss, out_shardings=sharding_lib.replicated(self.trainer.mesh))
        self.zeros_fn = jax.jit(zero_fractions, out_shardings=sharding_lib.replicated(self.trainer.mesh))
        log_dir.mkdir(parents=True, exist_ok=True)
        # one W&B run per run directory, written by process 0 (the others log their own TensorBoard files)
        wandb_run = WandbRun(cfg, workdir) if cfg.log.wandb and jax.process_index() == 0 else None
        # before metrics.jsonl exists: see the stop-signal tests
        stop_requested, restore_signals = stop_signals.install(self.checkpointer)
        self.logger = RunLogger(log_dir, wandb_run)
        tokens_per_step = cfg.data.batch_size * cfg.data.seq_len
        t_start = time.perf_counter()
        self.bar = tqdm(total=cfg.steps, initial=start_step, disable=not self.progress, desc=cfg.name,
                        dynamic_ncols=True, mininterval=1.0)
        try:
            for step in range(start_step + 1, cfg.steps + 1):
                batch = next(self.data_iter)
                for name, n in self.pipeline.token_counts(batch).items():
                    self.source_tokens[name] = self.source_tokens.get(name, 0) + n
                self.state, metrics = step_fn(self.state, self.trainer.shard_batch(batch))
                self.pending.append((step, metrics))
                self.tokens_since += tokens_per_step
                self.bar.update(1)
                for hook in self.hooks:
                    if hook.due(step, start_step + 1, cfg.steps):
                        hook.fn(step)
                stopped_by = stop_requested(step) if step < cfg.steps else None
                if stopped_by:
                    if self.saved_step != step:   # a step is saved once: Orbax refuses a second save of it
                        self.save(step)
                    self.checkpointer.wait()
                    self.bar.write(f"stopped by {stopped_by} at step {step}; checkpoint saved in "
                                   f"{self.checkpointer.directory}. Rerun the same command to resume.")
                    return {"stopped_at": step, "stopped_by": stopped_by}
        finally:
            failing = sys.exc_info()[1] is not None
            restore_signals()
            self.bar.close()
            self.checkpointer.wait()
            self.checkpointer.close()
            try:
                self.logger.close()
            except OSError:   # a full disk: the error already on its way (the checkpoint's) is the one to report
                if not failing:
                    raise
        return self._summary(start_step, log_dir, time.perf_counter() - t_start, tokens_per_step)

    def _summary(self, start_step: int, log_dir: epath.Path, elapsed: float, tokens_per_step: int) -> dict:
        cfg, final_step = self.cfg, int(self.state.step)
        summary = {
            "run": cfg.name,
            "workdir": str(self.workdir),
            "steps": final_step,
            "resumed_from": start_step or None,
            "parameters": count_params(cfg.model)["total"],
            "first_logged_loss": first_value(log_dir, "loss"),
            "final_loss": self.logger.last("loss"),
            "heldout_loss": self.logger.last("eval/loss"),
            "heldout_perplexity": self.logger.last("eval/perplexity"),
            **({"heldout_accuracy": self.logger.last("eval/accuracy")} if cfg.eval_task else {}),
            "tokens_seen": final_step * tokens_per_step,
            "wall_seconds": round(elapsed, 1),
            "checkpoint": str(self.checkpointer.directory / str(final_step)),
            "tensorboard": str(self.logger.tb_dir),
            "loss_curve": str(plot_loss_curve(log_dir, objectives=sorted({s.objective for s in cfg.data.sources}),
                                              task=cfg.eval_task)),
            "config": str(self.workdir / "config.json"),
        }
        write_atomic(log_dir / "summary.json", json.dumps(summary, indent=2).encode())
        if self.progress:
            print_summary(summary)
        return summary
