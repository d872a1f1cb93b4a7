"""A frozen full-precision teacher run inside the jitted train step: its top-k, computed on the devices.

    distill.teacher = "hf:DIR" | "hf:ORG/NAME" | "gguf:PATH" | "gguf:smollm2" | "bitjax:RUN_DIR";  distill.online = True

With `distill.online` the "kd" sources read plain packed text (no cache) and every batch gets the teacher
fields a cache would hold (bitjax.data.schema: top-k ids, their log-probabilities, the tail's log-mass),
computed from the teacher's logits in the same step, block by block over the sequence so no (B, L, V) array
exists. The KD loss then runs exactly as on cached fields, with every divergence and both tail modes; at
k = V it is full-vocabulary KD. The teacher's parameters are placed by the same sharding table as the
student's, passed to the step as an argument (not baked into the program), never updated and never saved.

A cached top-k stays the way for teachers that do not fit next to the student or run elsewhere.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from bitjax import sharding as sharding_lib
from bitjax.errors import ConfigError
from bitjax.losses import relation as relation_loss
from bitjax.losses.chunked_head import chunk_length
from bitjax.nn.layers import QuantStrength
from bitjax.nn.model_config import ModelConfig
from bitjax.nn.transformer import AttentionInputs, Transformer, quant_strengths
from bitjax.pretrained import spec as model_spec


@dataclasses.dataclass(frozen=True)
class OnlineTeacher:
    """A teacher's graph and its frozen parameters, placed on the run's mesh."""

    spec: str
    config: ModelConfig
    graphdef: Any
    params: nnx.State
    quant_vars: nnx.State

    def model(self, params: nnx.State) -> Transformer:
        return nnx.merge(self.graphdef, params, self.quant_vars)


def load(spec: str, student: ModelConfig, mesh, student_relation: tuple[int, int] | None = None) -> OnlineTeacher:
    """Import the teacher named by `spec` in full precision and place it on `mesh` (one-line errors)."""
    config, params = model_spec.load(model_spec.parse(spec, "distill.teacher"))
    if config.vocab_size != student.vocab_size:
        raise ConfigError(f"distill.teacher={spec}: the teacher has a vocabulary of {config.vocab_size} tokens, the "
                          f"student {student.vocab_size}; KD compares distributions over one vocabulary, so use "
                          "the teacher's tokenizer (data.tokenizer) and its vocabulary size for the student")
    if student_relation is not None:   # (distill.relation_layer, distill.relation_heads) of a relation loss
        relation_loss.check_model(config, *student_relation, f"teacher {spec}")
    return _place(spec, config, student, params, mesh)


def _student_numerics(config: ModelConfig, student: ModelConfig) -> ModelConfig:
    # The teacher computes like the student (dtype, attention kernel, remat); its weights stay as imported
    # (a full-precision teacher has no int8 matmul to take).
    return dataclasses.replace(config, dtype=student.dtype, remat=student.remat, attention=student.attention)


def _graph(config: ModelConfig):
    graphdef, abstract_params, quant_vars = nnx.split(nnx.eval_shape(lambda: Transformer(config, rngs=nnx.Rngs(0))),
                                                      nnx.Param, QuantStrength)
    return graphdef, abstract_params, quant_strengths(config, quant_vars)


def _place(spec: str, config: ModelConfig, student: ModelConfig, params, mesh) -> OnlineTeacher:
    config = _student_numerics(config, student)
    graphdef, _, quant_vars = _graph(config)
    shardings = sharding_lib.tree_shardings(params, mesh)
    params = jax.tree.map(lambda x, s: jax.device_put(jnp.asarray(x, config.param_dtype), s), params, shardings)
    return OnlineTeacher(spec, config, graphdef, params, quant_vars)


def abstract(spec: str, config: ModelConfig, student: ModelConfig, mesh) -> OnlineTeacher:
    """The teacher of `config` with its parameters as shapes placed on `mesh`, nothing loaded: what fit-check
    compiles the train step with."""
    config = _student_numerics(config, student)
    graphdef, abstract_params, quant_vars = _graph(config)
    shardings = sharding_lib.tree_shardings(abstract_params, mesh)
    params = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, config.param_dtype, sharding=s),
                          abstract_params, shardings)
    return OnlineTeacher(spec, config, graphdef, params, quant_vars)


def forward(model: Transformer, batch: dict, k: int, *, loss_chunk: int, relation_layer: int | None = None
            ) -> tuple[dict[str, jax.Array], AttentionInputs | None]:
    """The teacher's one forward pass in the step: its top-k fields (`topk_fields`), and with `relation_layer`
    that block's queries, keys and values (the attention-relation loss's teacher side). No gradient."""
    x_BLD, inputs = jax.lax.stop_gradient(model.hidden_states_and_inputs(
        batch["inputs"], batch["segment_ids"], batch["positions"], relation_layer))
    return _topk(x_BLD, jax.lax.stop_gradient(model.head_matrix_VD()), k, loss_chunk), inputs


def topk_fields(model: Transformer, batch: dict, k: int, *, loss_chunk: int) -> dict[str, jax.Array]:
    """The teacher fields of a batch (as a cache stores them, at temperature 1), from `model`'s forward.

    teacher_ids (B, L, E) int32, teacher_logprobs (B, L, E) float32, teacher_tail (B, L) float32: the log of
    the mass outside the top k (-inf when the top k hold everything).
    """
    return forward(model, batch, k, loss_chunk=loss_chunk)[0]


def _topk(x_BLD, head_VD, k: int, loss_chunk: int) -> dict[str, jax.Array]:
    """The top-k fields from the final hidden states and the head, block by block over the sequence."""
    B, L, _ = x_BLD.shape
    C = chunk_length(L, loss_chunk)

    def block(x_BCD):
        z_BCV = jnp.einsum("bcd,vd->bcv", x_BCD, head_VD, preferred_element_type=jnp.float32)
        lse_BC1 = jax.nn.logsumexp(z_BCV, axis=-1, keepdims=True)
        top_BCE, ids_BCE = jax.lax.top_k(z_BCV, k)
        # the tail as the cache computes it: a log-sum-exp over the logits outside the top k (-inf at k = V);
        # the (B, C, V) mask is one block's, like the logits
        B_, C_, _ = z_BCV.shape
        in_top_BCV = jnp.zeros(z_BCV.shape, bool).at[
            jnp.arange(B_)[:, None, None], jnp.arange(C_)[None, :, None], ids_BCE].set(True)
        tail_BC = jax.nn.logsumexp(jnp.where(in_top_BCV, -jnp.inf, z_BCV), axis=-1) - lse_BC1[..., 0]
        return ids_BCE.astype(jnp.int32), top_BCE - lse_BC1, tail_BC

    x_nBCD = jnp.swapaxes(x_BLD.reshape(B, L // C, C, -1), 0, 1)
    ids, logp, tail = jax.lax.map(block, x_nBCD)

    def unblock(a):
        return jnp.swapaxes(a, 0, 1).reshape((B, L) + a.shape[3:])

    return {"teacher_ids": unblock(ids), "teacher_logprobs": unblock(logp), "teacher_tail": unblock(tail)}
