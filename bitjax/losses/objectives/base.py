"""What an objective is: the model outputs it asks the step for, and its loss over a mixed batch.

An objective declares the outputs it reads beyond log p(target) (`Needs`: the KD divergence against the
teacher's top-k, one block's queries, keys and values in both models); the step computes exactly the union
of what the run's objectives need (bitjax.training.model_outputs) and every objective computes its
per-source loss from those outputs (`ModelOutputs`) through a `BatchView` of the batch. The step has no
case for any one objective: a new one is its own module, a line in the OBJECTIVES table and its test.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from bitjax.nn.transformer import AttentionInputs

# How the data pipeline builds a source's rows (bitjax.data.pipeline):
#   packed_text         documents packed into sequences (data.packing)
#   teacher_cache       the sequences of the teacher top-k cache, with its teacher fields
#   packed_completions  prompt/completion documents of positive traces, packed first-fit (kept whole)
#   trace_pairs         one row per positive/negative pair of traces, segment 1 and segment 2
RowKind = Literal["packed_text", "teacher_cache", "packed_completions", "trace_pairs"]


@dataclasses.dataclass(frozen=True)
class Needs:
    """Model outputs a step computes beyond log p(target), for the objectives of one run."""

    teacher_topk: bool = False            # the KD divergence per token against the teacher's top-k
    attention_layer: int | None = None    # this block's q/k/v in the student and in the online teacher

    def __or__(self, other: Needs) -> Needs:
        layers = {self.attention_layer, other.attention_layer} - {None}
        if len(layers) > 1:
            raise ValueError(f"objectives ask for the attention inputs of blocks {sorted(layers)}; one block only")
        return Needs(self.teacher_topk or other.teacher_topk, layers.pop() if layers else None)


class ModelOutputs(NamedTuple):
    """What one step's forward passes computed for the objectives (fields they did not need are None)."""

    logp_BL: jax.Array                               # log p(target) at every position
    kd_BL: jax.Array | None = None                   # KD divergence from the teacher's top-k, times T^2
    student_attention: AttentionInputs | None = None
    teacher_attention: AttentionInputs | None = None


@dataclasses.dataclass(frozen=True)
class BatchView:
    """What every objective's loss reads: the batch, the model outputs, and per-source sums.

    Dimension letters: S the row sources of the run (DataConfig.row_sources), one-hot per row in onehot_BS.
    """

    batch: dict
    outputs: ModelOutputs
    mask_BL: jax.Array          # float32 loss mask
    onehot_BS: jax.Array        # row -> source
    distill: object             # the run's DistillConfig
    step: ArrayLike             # the train step (drives the KD weight ramp)

    @property
    def logp_BL(self) -> jax.Array:
        return self.outputs.logp_BL

    @property
    def tokens_S(self) -> jax.Array:
        return self.onehot_BS.T @ jnp.sum(self.mask_BL, axis=-1)

    @property
    def rows_S(self) -> jax.Array:
        return jnp.sum(self.onehot_BS, axis=0)

    def token_mean_S(self, values_BL: jax.Array) -> jax.Array:
        """Per source, the mean of a per-token value over its trained tokens."""
        return (self.onehot_BS.T @ jnp.sum(values_BL * self.mask_BL, axis=-1)) / jnp.maximum(self.tokens_S, 1.0)

    def row_mean_S(self, values_B: jax.Array) -> jax.Array:
        """Per source, the mean of a per-row value over its rows."""
        return (self.onehot_BS.T @ values_B) / jnp.maximum(self.rows_S, 1.0)


LossFn = Callable[[BatchView, jax.Array], tuple[jax.Array, dict]]   # (view, is-this-objective (S,)) -> (L_S, metrics)


@dataclasses.dataclass(frozen=True)
class Objective:
    """One way to learn from a source."""

    reads: Literal["text", "traces"]     # the kind of source it applies to
    rows: RowKind                        # how the data pipeline builds its rows
    loss: LossFn
    teacher: bool = False                # learns from the teacher's top-k (a cache's fields or an online teacher)
    cached_teacher: bool = True          # ... which a teacher cache can supply (else only distill.online)
    token_level: bool = True             # its CE over trained tokens counts in the `ce` metric
    attention: Callable[[object], int | None] = lambda distill: None   # block whose q/k/v it reads, if any
    doc: str = ""

    def needs(self, distill) -> Needs:
        """The model outputs this objective reads under `distill` (a DistillConfig)."""
        return Needs(teacher_topk=self.teacher, attention_layer=self.attention(distill))


def weighted_mean(values, weights):
    """NaN when nothing carries weight: a metric of rows absent from this batch (left out of the logs)."""
    total = jnp.sum(weights)
    return jnp.where(total > 0, jnp.sum(values * weights) / jnp.maximum(total, 1e-9), jnp.nan)
