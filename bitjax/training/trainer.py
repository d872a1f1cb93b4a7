"""The training loop: one jitted, donated train step; metrics; Orbax checkpoints; exact resume.

`train(cfg, workdir)` builds the model and optimizer, restores the latest checkpoint in `workdir` if one
exists (model, optimizer, step and the Grain iterator position), then runs to `cfg.steps`. SIGTERM (a
preempted TPU VM) or Ctrl-C (SIGINT) stops after the current step with one checkpoint of it; rerunning the
same command resumes and produces bitwise the same parameters as an uninterrupted run on the same hardware.
The returned summary says which signal stopped it; the command line exits 0 after SIGTERM and 130 (the
shell's code for an interrupt) after Ctrl-C, so `bitjax train ... && next-step` does not go on.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import time
from pathlib import Path
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from etils import epath
from flax import nnx
from tqdm import tqdm

from bitjax import data as data_lib
from bitjax import sharding as sharding_lib
from bitjax.config.train import TrainConfig
from bitjax.data import coverage, schema
from bitjax.errors import ConfigError, TrainingError
from bitjax.losses import chunked_head as fused_head
from bitjax.losses import objectives as objective
from bitjax.losses import relation as relation_loss
from bitjax.losses import terms as losses
from bitjax.nn import layer_stack, quant
from bitjax.nn.layers import QuantStrength, ternarize_once
from bitjax.nn.transformer import Transformer, count_params, quant_strengths
from bitjax.paths import cache_dir, check_checkpoint_store, user_path, write_atomic
from bitjax.run import RunPaths
from bitjax.training import checkpointer as ckpt_lib
from bitjax.training import lock as workdir_lock
from bitjax.training.optim import current_hyperparams, make_optimizer
from bitjax.training.outputs import RunLogger, first_value, plot_loss_curve, print_summary


@flax.struct.dataclass
class TrainState:
    step: jax.Array          # () int32, number of updates applied
    params: nnx.State        # latent full-precision parameters
    opt_state: Any           # optax state of `make_optimizer`


@dataclasses.dataclass(frozen=True)
class Trainer:
    """The static parts of a run: model graph, optimizer, device mesh and the jitted functions built from them."""

    cfg: TrainConfig
    graphdef: Any
    quant_vars: nnx.State    # QuantStrength variables; their value is set from the step each update
    tx: optax.GradientTransformation
    mesh: jax.sharding.Mesh  # (data, fsdp, tensor); every array is placed by sharding.RULES
    objectives: objective.SourceObjectives   # per data source: objective and loss weight
    teacher: Any = None      # an online_teacher.OnlineTeacher when distill.online (its params are a step argument)

    @classmethod
    def create(cls, cfg: TrainConfig, devices=None, *, load_teacher: bool = False) -> "Trainer":
        """`devices` defaults to all devices of the run; fit-check passes compile-only TPU devices.
        `load_teacher`: with distill.online, import the teacher and place it on the mesh (training does)."""
        abstract_model = nnx.eval_shape(lambda: Transformer(cfg.model, rngs=nnx.Rngs(cfg.seed)))
        graphdef, _, quant_vars = nnx.split(abstract_model, nnx.Param, QuantStrength)
        quant_vars = quant_strengths(cfg.model, quant_vars)
        mesh = sharding_lib.make_mesh(cfg.mesh, devices)
        sharding_lib.check_batch(cfg.data.batch_size, mesh)
        teacher = None
        if load_teacher and cfg.distill.online:
            from bitjax.teachers import online as online_teacher
            d = cfg.distill
            relation = (d.relation_layer, d.relation_heads) if d.relation_weight > 0 else None
            teacher = online_teacher.load(d.teacher, cfg.model, mesh, student_relation=relation)
        return cls(cfg, graphdef, quant_vars, make_optimizer(cfg.optim, cfg.steps), mesh,
                   objective.SourceObjectives.from_config(cfg), teacher)

    # ---------------------------------------------------------------- state

    def _init(self) -> TrainState:
        model = Transformer(self.cfg.model, rngs=nnx.Rngs(self.cfg.seed))
        params = nnx.state(model, nnx.Param)
        return TrainState(jnp.zeros((), jnp.int32), params, self.tx.init(params))

    def state_shardings(self) -> TrainState:
        """Where each leaf of the state lives, from the one rule table (optimizer moments follow their parameter)."""
        return sharding_lib.tree_shardings(jax.eval_shape(self._init), self.mesh)

    def init_state(self, init_from: str = "") -> TrainState:
        """eval_shape -> shardings -> jit(init, out_shardings): each device builds only its own shards.

        `init_from` (gguf:PATH, hf:DIR): the parameters come from that pretrained model (bitjax.init_from).
        """
        if not init_from:
            return jax.jit(self._init, out_shardings=self.state_shardings())()
        from bitjax.pretrained.init_from import student_params

        params = student_params(init_from, jax.eval_shape(self._init).params, self.cfg.model)
        fresh = lambda p: TrainState(jnp.zeros((), jnp.int32), p, self.tx.init(p))
        return jax.jit(fresh, out_shardings=self.state_shardings())(params)

    def abstract_state(self) -> TrainState:
        """Shapes, dtypes and shardings of the state: the target Orbax restores into (any mesh)."""
        return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                            jax.eval_shape(self._init), self.state_shardings())

    def shard_batch(self, local_batch: dict) -> dict:
        """This process's rows of a batch -> the global batch, split over the mesh's batch axes."""
        return sharding_lib.global_batch(local_batch, self.mesh)

    def batch_shapes(self, teacher_k: int | None = None) -> dict[str, tuple[tuple[int, ...], Any]]:
        """Shape and dtype of every field of a global training batch (teacher fields when a source distils)."""
        k = (teacher_k or self.cfg.distill.k) if self.objectives.needs_teacher() else 0
        return schema.batch_fields(self.cfg.data.batch_size, self.cfg.data.seq_len, k, self.cfg.model.vocab_size)

    def model(self, params: nnx.State, lam: jax.Array | float = 1.0) -> Transformer:
        model = nnx.merge(self.graphdef, params, quant_strengths(self.cfg.model, self.quant_vars, lam))
        ternarize_once(model)   # int8 BitLinears: every kernel's codes and scale once per step, ahead of remat
        return model

    def mesh_context(self):
        """Set the run's mesh for the trace, so attention kernels run per device (bitjax.attention)."""
        return jax.sharding.use_abstract_mesh(self.mesh.abstract_mesh)

    # ---------------------------------------------------------------- steps

    def loss(self, params: nnx.State, batch: dict, lam, step, teacher_params=None) -> tuple[jax.Array, dict]:
        """Every row's loss by its source's objective (CE, KD against the cache, SFT, REDI); see bitjax.objective.

        With an online teacher its top-k fields are computed here, as a cache would hold them, and with
        distill.relation_weight > 0 both models' q/k/v of one block give the attention-relation loss."""
        d = self.cfg.distill
        # the relation loss needs the teacher's q/k/v of this batch: only a loaded online teacher has them (a
        # trainer built without it, as fit-check's, compiles the step a cache would feed)
        layer = d.relation_layer if d.relation_weight > 0 and self.teacher is not None else None
        with self.mesh_context():
            teacher_inputs = None
            if self.teacher is not None:
                from bitjax.teachers import online as online_teacher
                fields, teacher_inputs = online_teacher.forward(self.teacher.model(teacher_params), batch, d.k,
                                                                loss_chunk=self.cfg.loss_chunk, relation_layer=layer)
                batch = {**batch, **fields}
            model = self.model(params, lam)
            x_BLD, student_inputs = model.hidden_states_and_inputs(batch["inputs"], batch["segment_ids"],
                                                                   batch["positions"], layer)
            distill = d if self.objectives.needs_teacher() else None
            logp_BL, kd_BL = fused_head.token_quantities(
                x_BLD, model.head_matrix_VD(), batch["targets"], fused_head.teacher_fields(batch, distill), distill,
                loss_chunk=self.cfg.loss_chunk, mesh=self.mesh)
            relation_BL = None if layer is None else relation_loss.relation_kl_per_token(
                student_inputs, teacher_inputs, batch["segment_ids"], d.relation_heads)
        return objective.batch_loss(logp_BL, kd_BL, batch, self.objectives, d, step, relation_BL)

    def train_step(self, state: TrainState, batch: dict, teacher_params=None) -> tuple[TrainState, dict]:
        lam = quant.lambda_schedule(state.step, self.cfg.quant_warmup_steps)
        (loss, aux), grads = jax.value_and_grad(self.loss, has_aux=True)(state.params, batch, lam, state.step,
                                                                        teacher_params)
        updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), "quant_lambda": lam,
                   **current_hyperparams(opt_state), **aux}
        return TrainState(state.step + 1, params, opt_state), metrics

    def jit_train_step(self):
        """The one train step, jitted with explicit shardings; the old state's buffers are donated."""
        state_sh = self.state_shardings()
        if self.teacher is None:
            return jax.jit(self.train_step, in_shardings=(state_sh, sharding_lib.batch_sharding(self.mesh)),
                           out_shardings=(state_sh, sharding_lib.replicated(self.mesh)), donate_argnums=(0,))
        # The teacher's parameters are an argument placed by the sharding table, not constants of the program.
        teacher_sh = sharding_lib.tree_shardings(self.teacher.params, self.mesh)
        step = jax.jit(self.train_step,
                       in_shardings=(state_sh, sharding_lib.batch_sharding(self.mesh), teacher_sh),
                       out_shardings=(state_sh, sharding_lib.replicated(self.mesh)), donate_argnums=(0,))
        return lambda state, batch: step(state, batch, self.teacher.params)

    def eval_loss(self, params: nnx.State, batch: dict) -> tuple[jax.Array, jax.Array]:
        """Summed CE and token count on one batch, fully quantized."""
        with self.mesh_context():
            logp_BL, _ = fused_head.model_token_quantities(self.model(params, 1.0), batch,
                                                           loss_chunk=self.cfg.loss_chunk, mesh=self.mesh)
        return losses.summed_negative_logprob(logp_BL, batch["loss_mask"])


def zero_fractions(params: nnx.State) -> dict[str, jax.Array]:
    """Fraction of zero ternary codes in each BitLinear kernel, keyed by per-layer module path (`layers.3.mlp...`)."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        name = sharding_lib.path_name(path)
        if not name.endswith(".kernel"):
            continue
        if layer_stack.is_stacked(name) and leaf.ndim == 3:   # one absmean scale per layer, as in the forward
            zeros_S = jax.vmap(lambda kernel: jnp.mean(quant.ternary_codes(kernel)[0] == 0))(leaf)
            for i in range(leaf.shape[0]):
                out[name.removesuffix(".kernel").replace("layers.", f"layers.{i}.", 1)] = zeros_S[i]
        elif leaf.ndim == 2:
            codes, _ = quant.ternary_codes(leaf)
            out[name.removesuffix(".kernel")] = jnp.mean(codes == 0)
    return out


def enable_compilation_cache() -> None:
    """Keep compiled steps on disk (JAX's persistent compilation cache) so a preempted or resumed run does not
    compile again for minutes: $JAX_COMPILATION_CACHE_DIR if set, else <bitjax cache>/xla on each host."""
    if not jax.config.jax_compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", str(cache_dir() / "xla"))


def train(cfg: TrainConfig, workdir: str | Path, *, progress: bool = True, devices=None) -> dict:
    """Train (or resume) `cfg` in `workdir`; returns the summary it prints. `devices`: all by default.

    The workdir is locked for the run (bitjax.workdir_lock): a second trainer on it is refused in one line.
    """
    workdir = user_path(workdir, "workdir")
    check_checkpoint_store(workdir, "workdir")
    sharding_lib.initialize_distributed(cfg.mesh)
    enable_compilation_cache()
    workdir.mkdir(parents=True, exist_ok=True)
    with workdir_lock.held(RunPaths(workdir).lock, f"workdir {workdir}", enabled=jax.process_index() == 0):
        return _train(cfg, workdir, progress, devices)


def _train(cfg: TrainConfig, workdir: epath.Path, progress: bool, devices) -> dict:
    trainer = Trainer.create(cfg, devices, load_teacher=True)
    # an online teacher computes the top-k in the step: its "kd" sources stream plain text, no cache is read
    cache = "" if cfg.distill.online else cfg.distill.cache
    pipeline = data_lib.build_pipeline(cfg.data, teacher_cache=cache, vocab_size=cfg.model.vocab_size)
    if pipeline.vocab_size > cfg.model.vocab_size:
        raise ConfigError(
            f"tokenizer {pipeline.tokenizer_path} has {pipeline.vocab_size} tokens but "
            f"model.vocab_size={cfg.model.vocab_size}; set --set model.vocab_size={pipeline.vocab_size}")
    if jax.process_index() == 0:
        print(coverage.render(coverage.coverage(cfg, pipeline), cfg.steps, cfg.data.on_exhausted), flush=True)
    eval_batches = [sharding_lib.replicated_batch(b, trainer.mesh)
                    for b in pipeline.heldout_batches(cfg.eval_batches)]
    meta = ckpt_lib.meta_for(cfg, pipeline.tokenizer_fingerprint)

    checkpointer = ckpt_lib.Checkpointer(workdir / "checkpoints", cfg)

    def restore(step):
        # A resumed run keeps the data shards it started with, whatever the process count is now.
        data_iter = pipeline.train_iterator(jax.process_index(), jax.process_count(),
                                            checkpointer.saved_data_shards(step))
        ckpt_lib.check_compatible(checkpointer.read_meta(step), cfg, pipeline.tokenizer_fingerprint, workdir)
        return checkpointer.restore(step, trainer.abstract_state(), data_iter), data_iter

    # A damaged newest checkpoint is set aside (process 0 moves it) and the one before it is used.
    start_step, restored = ckpt_lib.resume(checkpointer, restore, move_damaged=jax.process_index() == 0)
    if start_step is not None:
        state, data_iter = restored
        print(f"resumed from step {start_step} in {checkpointer.directory}", flush=True)
    else:
        data_iter = pipeline.train_iterator(jax.process_index(), jax.process_count())
        state = trainer.init_state(cfg.init_from)
        start_step = 0
    # Process 0 owns the run directory's files; the other processes of a multi-host run log beside it.
    log_dir = workdir if jax.process_index() == 0 else workdir / "process_logs" / str(jax.process_index())
    if jax.process_index() == 0:
        write_atomic(workdir / "config.json", ckpt_lib.dump_meta(meta).encode())
        # the run directory is self-contained; the tokenizer is a local cache file, read here and written up
        write_atomic(workdir / "tokenizer.json", epath.Path(pipeline.tokenizer_path).read_bytes())

    step_fn = trainer.jit_train_step()
    eval_fn = jax.jit(trainer.eval_loss, out_shardings=sharding_lib.replicated(trainer.mesh))
    zeros_fn = jax.jit(zero_fractions, out_shardings=sharding_lib.replicated(trainer.mesh))
    log_dir.mkdir(parents=True, exist_ok=True)
    stop_requested, restore_signals = _stop_signal(checkpointer)   # before metrics.jsonl exists: see its tests
    logger = RunLogger(log_dir)

    def evaluate(params) -> float:
        sums = jax.device_get([eval_fn(params, batch) for batch in eval_batches])   # one transfer, not 2 per batch
        total, count = sum(float(s) for s, _ in sums), sum(float(n) for _, n in sums)
        return total / max(count, 1.0)

    pending: list[tuple[int, dict]] = []   # device metrics not yet checked or logged
    source_tokens: dict[str, int] = {}     # tokens per data source since the last log line
    last_good_checkpoint = start_step if start_step else None
    t_last, tokens_since = time.perf_counter(), 0
    tokens_per_step = cfg.data.batch_size * cfg.data.seq_len
    t_start = time.perf_counter()
    bar = tqdm(total=cfg.steps, initial=start_step, disable=not progress, desc=cfg.name, dynamic_ncols=True,
               mininterval=1.0)

    def flush_metrics(step: int) -> dict:
        """Bring pending metrics to the host; stop on NaN/Inf before anything is saved from that state."""
        nonlocal t_last, tokens_since
        host = jax.device_get(pending)
        pending.clear()
        for s, m in host:
            if not np.isfinite(m["loss"]):
                kept = (f"the last good checkpoint (step {last_good_checkpoint}) is kept in "
                        f"{checkpointer.directory}" if last_good_checkpoint is not None else
                        "no checkpoint was saved before it")
                raise TrainingError(
                    f"loss became {m['loss']} at step {s}; {kept}. Check the data first (token ids inside the "
                    "vocabulary, finite teacher-cache values), then the learning rate (--set optim.peak_lr=...), "
                    "and rerun the same command")
        now = time.perf_counter()
        # parts of the loss whose rows were absent from the last batch are NaN by construction: not logged
        latest = {k: float(v) for k, v in host[-1][1].items() if k == "loss" or not np.isnan(v)} if host else {}
        if host:
            latest["tokens_per_sec"] = tokens_since / max(now - t_last, 1e-9)
            t_last, tokens_since = now, 0
        return latest

    def save(step: int) -> None:
        nonlocal last_good_checkpoint
        flush_metrics(step)
        checkpointer.save(step, state, data_iter, meta)
        last_good_checkpoint = step

    try:
        for step in range(start_step + 1, cfg.steps + 1):
            batch = next(data_iter)
            for name, n in pipeline.token_counts(batch).items():
                source_tokens[name] = source_tokens.get(name, 0) + n
            state, metrics = step_fn(state, trainer.shard_batch(batch))
            pending.append((step, metrics))
            tokens_since += tokens_per_step
            bar.update(1)
            if step % cfg.log_every == 0 or step == cfg.steps or step == start_step + 1:
                scalars = flush_metrics(step)
                zeros = jax.device_get(zeros_fn(state.params))   # every kernel's fraction in one transfer
                scalars.update({f"zeros/{k}": float(v) for k, v in zeros.items()})
                scalars.update({f"data/tokens/{k}": float(v) for k, v in source_tokens.items()})
                source_tokens.clear()
                logger.log(step, scalars)
                bar.set_postfix(loss=f"{scalars['loss']:.3f}", lr=f"{scalars['lr']:.2e}")
            if eval_batches and (step % cfg.eval_every == 0 or step == cfg.steps):
                eval_loss = evaluate(state.params)
                logger.log(step, {"eval/loss": eval_loss, "eval/perplexity": float(np.exp(eval_loss))})
            scheduled = step % cfg.checkpoint.every == 0 or step == cfg.steps
            if scheduled:
                save(step)
                bar.write(f"step {step}: checkpoint queued in {checkpointer.directory}")
            stopped_by = stop_requested(step) if step < cfg.steps else None
            if stopped_by:
                if not scheduled:   # a step is saved once: Orbax refuses a second save of the same step
                    save(step)
                checkpointer.wait()
                bar.write(f"stopped by {stopped_by} at step {step}; checkpoint saved in {checkpointer.directory}. "
                          "Rerun the same command to resume.")
                return {"stopped_at": step, "stopped_by": stopped_by}
    finally:
        restore_signals()
        bar.close()
        checkpointer.wait()
        checkpointer.close()
        logger.close()

    elapsed = time.perf_counter() - t_start
    final_step = int(state.step)
    summary = {
        "run": cfg.name,
        "workdir": str(workdir),
        "steps": final_step,
        "resumed_from": start_step or None,
        "parameters": count_params(cfg.model)["total"],
        "first_logged_loss": first_value(log_dir, "loss"),
        "final_loss": logger.last("loss"),
        "heldout_loss": logger.last("eval/loss"),
        "heldout_perplexity": logger.last("eval/perplexity"),
        "tokens_seen": final_step * tokens_per_step,
        "wall_seconds": round(elapsed, 1),
        "checkpoint": str(checkpointer.directory / str(final_step)),
        "tensorboard": str(logger.tb_dir),
        "loss_curve": str(plot_loss_curve(log_dir)),
        "config": str(workdir / "config.json"),
    }
    write_atomic(log_dir / "summary.json", json.dumps(summary, indent=2).encode())
    if progress:
        print_summary(summary)
    return summary


def _stop_signal(checkpointer):
    """step -> the name of the signal that asks to save and stop now, or None.

    Several processes must agree on the step, so a multi-host run asks JAX's preemption sync point (all
    workers get the notice, all stop at the same step). One process handles SIGTERM and SIGINT (Ctrl-C) itself.
    """
    if jax.process_count() > 1:
        return (lambda step: "SIGTERM" if checkpointer.manager.reached_preemption(step) else None), (lambda: None)
    return _install_stop_handlers()


def _install_stop_handlers():
    """SIGTERM and SIGINT set a flag the loop checks after each step, so the state saved is a consistent one.

    After the first Ctrl-C, a second one interrupts at once (Python's default), for a user who will not wait
    for the save.
    """
    requested: dict = {"signal": None}

    def handler(signum, frame):
        requested["signal"] = signal.Signals(signum).name
        if signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)

    try:
        previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    except ValueError:  # not the main thread (e.g. called from a notebook worker): no handler
        return (lambda step: None), (lambda: None)

    def restore():
        for s, h in previous.items():
            signal.signal(s, h)

    return (lambda step: requested["signal"]), restore
