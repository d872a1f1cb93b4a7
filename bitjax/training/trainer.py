"""The jitted train step: a run's model graph, optimizer and mesh, and the one step built from them.

`Trainer.train_step` computes the model outputs the run's objectives need (bitjax.training.model_outputs),
their batch loss (bitjax.losses.objectives), its gradient, and one AdamW update; `jit_train_step` compiles it
once with explicit shardings and donates the old state. The loop around it (resume, metrics, evaluation,
checkpoints, stop signals) is bitjax.training.loop.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from bitjax import sharding as sharding_lib
from bitjax.config import TrainConfig
from bitjax.data import schema
from bitjax.errors import warn_once
from bitjax.losses import chunked_head, objectives, terms
from bitjax.nn import attention as attention_lib
from bitjax.nn import layer_stack, quant
from bitjax.nn.layers import QuantStrength, ternarize_once
from bitjax.nn.transformer import Transformer, quant_strengths
from bitjax.pretrained.init_from import student_params
from bitjax.teachers import online
from bitjax.training import model_outputs, nonfinite
from bitjax.training.optim import current_hyperparams, make_optimizer


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
    objectives: objectives.SourceObjectives   # per data source: objective and loss weight
    needs: objectives.Needs  # the model outputs those objectives read: what each step computes
    teacher: Any = None      # an online.OnlineTeacher when distill.online (its params are a step argument)

    @classmethod
    def create(cls, cfg: TrainConfig, devices=None, *, load_teacher: bool = False) -> "Trainer":
        """`devices` defaults to all devices of the run; fit-check passes compile-only TPU devices.
        `load_teacher`: with distill.online, import the teacher and place it on the mesh (training does)."""
        abstract_model = nnx.eval_shape(lambda: Transformer(cfg.model, rngs=nnx.Rngs(cfg.seed)))
        graphdef, _, quant_vars = nnx.split(abstract_model, nnx.Param, QuantStrength)
        quant_vars = quant_strengths(cfg.model, quant_vars)
        mesh = sharding_lib.make_mesh(cfg.mesh, devices)
        sharding_lib.check_batch(cfg.data.batch_size, mesh)
        slow_attention = attention_lib.auto_fallback(cfg.model.attention, mesh.devices.flat[0].platform,
                                                     cfg.data.seq_len, cfg.model.dtype)
        if slow_attention:
            warn_once(slow_attention)
        table = objectives.SourceObjectives.from_config(cfg)
        needs = table.needs(cfg.distill)
        teacher = None
        if load_teacher and cfg.distill.online:
            d = cfg.distill
            attention = (needs.attention_layer, d.relation_heads) if needs.attention_layer is not None else None
            teacher = online.load(d.teacher, cfg.model, mesh, student_relation=attention)
        return cls(cfg, graphdef, quant_vars, make_optimizer(cfg.optim, cfg.steps), mesh, table, needs, teacher)

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

        `init_from` (a model spec, bitjax.pretrained.spec: gguf:PATH, hf:DIR, hf:ORG/NAME, ...): the parameters
        come from that pretrained model (bitjax.pretrained.init_from).
        """
        if not init_from:
            return jax.jit(self._init, out_shardings=self.state_shardings())()
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
        """Shape and dtype of every field of a global training batch (teacher fields when a source distils from a
        cache; an online teacher computes them in the step)."""
        k = (teacher_k or self.cfg.distill.k) if self.objectives.needs_teacher() and self.teacher is None else 0
        return schema.batch_fields(self.cfg.data.batch_size, self.cfg.data.seq_len, k, self.cfg.model.vocab_size)

    def model(self, params: nnx.State, lam: jax.Array | float = 1.0) -> Transformer:
        model = nnx.merge(self.graphdef, params, quant_strengths(self.cfg.model, self.quant_vars, lam))
        # int8 BitLinears: every kernel's codes and scale once per step, ahead of remat; under FSDP the codes are
        # packed four to a byte where they lie, so each layer all-gathers 2 bits a weight
        ternarize_once(model, lambda path, shape: sharding_lib.code_gather_plan(path, shape, self.mesh))
        return model

    def mesh_context(self):
        """Set the run's mesh for the trace, so attention kernels run per device (bitjax.nn.attention)."""
        return jax.sharding.use_abstract_mesh(self.mesh.abstract_mesh)

    # ---------------------------------------------------------------- steps

    def loss(self, params: nnx.State, batch: dict, lam, step, teacher_params=None) -> tuple[jax.Array, dict]:
        """Every row's loss by its source's objective, from the model outputs the objectives need."""
        with self.mesh_context():
            teacher = self.teacher.model(teacher_params) if self.teacher is not None else None
            outputs, batch = model_outputs.compute(self.model(params, lam), teacher, batch, self.needs,
                                                   self.cfg.distill, loss_chunk=self.cfg.loss_chunk, mesh=self.mesh)
        return objectives.batch_loss(outputs, batch, self.objectives, self.cfg.distill, step)

    def train_step(self, state: TrainState, batch: dict, teacher_params=None) -> tuple[TrainState, dict]:
        lam = quant.lambda_schedule(state.step, self.cfg.quant_warmup_steps)
        (loss, aux), grads = jax.value_and_grad(self.loss, has_aux=True)(state.params, batch, lam, state.step,
                                                                        teacher_params)
        updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        grad_norm = optax.tree.norm(grads)
        # one scalar: whether the loss, the gradient norm and the whole updated state are finite (see nonfinite)
        code = nonfinite.first_nonfinite(loss, grad_norm, params, opt_state)
        if self.cfg.on_nonfinite == "skip":   # drop the update; the batch is consumed
            params, opt_state = nonfinite.keep_if_finite(code, (params, opt_state), (state.params, state.opt_state))
        metrics = {"loss": loss, "grad_norm": grad_norm, "nonfinite": code, "quant_lambda": lam,
                   **current_hyperparams(opt_state), **aux}
        return TrainState(state.step + 1, params, opt_state), metrics

    def watched_names(self) -> list[str]:
        """What a step's `nonfinite` code names (bitjax.training.nonfinite)."""
        state = jax.eval_shape(self._init)
        return nonfinite.watched_names(state.params, state.opt_state)

    def jitted_step(self):
        """The one train step, jitted with explicit shardings, the old state's buffers donated: it takes
        (state, batch), and with an online teacher (state, batch, teacher parameters)."""
        state_sh = self.state_shardings()
        if self.teacher is None:
            return jax.jit(self.train_step, in_shardings=(state_sh, sharding_lib.batch_sharding(self.mesh)),
                           out_shardings=(state_sh, sharding_lib.replicated(self.mesh)), donate_argnums=(0,))
        # The teacher's parameters are an argument placed by the sharding table, not constants of the program.
        teacher_sh = sharding_lib.tree_shardings(self.teacher.params, self.mesh)
        return jax.jit(self.train_step,
                       in_shardings=(state_sh, sharding_lib.batch_sharding(self.mesh), teacher_sh),
                       out_shardings=(state_sh, sharding_lib.replicated(self.mesh)), donate_argnums=(0,))

    def jit_train_step(self):
        """`jitted_step` as (state, batch) -> (state, metrics): the online teacher's parameters passed along."""
        step = self.jitted_step()
        if self.teacher is None:
            return step
        return lambda state, batch: step(state, batch, self.teacher.params)

    def eval_loss(self, params: nnx.State, batch: dict) -> tuple[jax.Array, jax.Array]:
        """Summed CE and token count on one batch, fully quantized."""
        with self.mesh_context():
            logp_BL, _ = chunked_head.model_token_quantities(self.model(params, 1.0), batch,
                                                             loss_chunk=self.cfg.loss_chunk, mesh=self.mesh)
        return terms.summed_negative_logprob(logp_BL, batch["loss_mask"])


def zero_fractions(params: nnx.State) -> dict[str, jax.Array]:
    """Fraction of zero ternary codes in each BitLinear kernel, keyed by per-layer module path (`layers.3.mlp...`)."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        name = sharding_lib.path_name(path)
        if not name.endswith(".kernel"):
            continue
        if layer_stack.is_stacked(name) and leaf.ndim == 3:   # one absmean scale per layer, as in the forward
            zeros_Z = jax.vmap(lambda kernel: jnp.mean(quant.ternary_codes(kernel)[0] == 0))(leaf)
            for i in range(leaf.shape[0]):
                out[name.removesuffix(".kernel").replace("layers.", f"layers.{i}.", 1)] = zeros_Z[i]
        elif leaf.ndim == 2:
            codes, _ = quant.ternary_codes(leaf)
            out[name.removesuffix(".kernel")] = jnp.mean(codes == 0)
    return out


