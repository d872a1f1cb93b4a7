"""The LM head and the per-token losses, block by block over the sequence: no (B, L, V) array in the step.

The head matrix multiplies one (B, C, V) block of C positions at a time (`lax.map` over the L / C
blocks), accumulating in float32 (`preferred_element_type`), and each block is reduced at once to what
the objectives read (bitjax.losses.objectives): log p(target) per token and, for batches with a teacher's
top-k, the per-token KD divergence. Both share one log-sum-exp of the block's logits (a second one of
z / T when the temperature is not 1). The block body is under `jax.checkpoint`, so the backward pass
recomputes a block's logits instead of keeping all L / C of them.

The formulas are those of bitjax.losses.terms (`topk_kd_per_token`); bitjax.losses.reference computes the
same from full logits, the reference that tests compare this path against. One difference: with the tail
bucket the student's tail is 1 minus its top-k mass (`terms.student_tail_from_topk`), not a masked
log-sum-exp; equal for distinct ids down to a tail of eps, below which it is floored at eps. Padding
positions (id 0 repeated) and rows without a teacher get other, finite, KD values than the reference;
they carry no weight in the loss.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike
from jaxtyping import Float, Int

from bitjax import sharding as sharding_lib
from bitjax.losses import terms
from bitjax.nn.quant import at_least_f32

TEACHER_FIELDS = ("teacher_ids", "teacher_logprobs", "teacher_tail")


class TokenQuantities(NamedTuple):
    """What the batch loss reads, per token: log p(target), and the KD divergence times T^2 (None without
    a teacher)."""

    logp_BL: jax.Array
    kd_BL: jax.Array | None


def chunk_length(seq_len: int, loss_chunk: int) -> int:
    """The block length for sequences of `seq_len`: the largest divisor of seq_len that is at most `loss_chunk`
    (the whole sequence when it is shorter)."""
    return max(c for c in range(1, min(seq_len, loss_chunk) + 1) if seq_len % c == 0)


def token_quantities(
    x_BLD: Float[ArrayLike, "B L D"],
    head_VD: Float[ArrayLike, "V D"],
    targets_BL: Int[ArrayLike, "B L"],
    teacher: dict | None = None,
    distill=None,
    *,
    loss_chunk: int,
    mesh=None,
) -> TokenQuantities:
    """log p(target) (B, L), and with `teacher` (the batch's teacher fields) the KD per token at `distill`'s
    settings (a DistillConfig), from the final hidden states and the head matrix, `loss_chunk` positions
    at a time. `mesh`: place each logits block like the full logits (sharding rule "logits")."""
    B, L, D = x_BLD.shape
    C = chunk_length(L, loss_chunk)
    n = L // C

    def blocks(a):   # (B, L, ...) -> (L / C, B, C, ...)
        return jnp.swapaxes(a.reshape((B, n, C) + a.shape[2:]), 0, 1)

    def unblock(a):  # (L / C, B, C) -> (B, L)
        return jnp.swapaxes(a, 0, 1).reshape(B, L)

    if mesh is not None:   # gathered whole over fsdp once, before the blocks, not once per block and pass
        head_VD = sharding_lib.constrain(head_VD, "head", mesh)
    xs = (blocks(x_BLD), blocks(targets_BL))
    if teacher is not None:
        xs += tuple(blocks(teacher[f]) for f in TEACHER_FIELDS)

    def block(args):
        x_BCD, targets_BC, *teacher_fields = args
        z_BCV = jnp.einsum("bcd,vd->bcv", x_BCD, head_VD, preferred_element_type=at_least_f32(x_BCD.dtype))
        if mesh is not None:
            z_BCV = sharding_lib.constrain(z_BCV, "logits", mesh)
        lse_BC1 = jax.nn.logsumexp(z_BCV, axis=-1, keepdims=True)
        logp_BC = jnp.take_along_axis(z_BCV, targets_BC[..., None], axis=-1)[..., 0] - lse_BC1[..., 0]
        if not teacher_fields:
            return logp_BC
        ids_BCE, t_logp_BCE, t_tail_BC = teacher_fields
        return logp_BC, _kd(z_BCV, lse_BC1, ids_BCE, t_logp_BCE, t_tail_BC, distill)

    if n == 1:   # one block is the whole sequence: recomputing it in the backward pass would save nothing
        out = jax.tree.map(lambda a: a[None], block(jax.tree.map(lambda a: a[0], xs)))
    else:        # prevent_cse=False: inside a loop the recomputation cannot be merged away (jax.checkpoint docs)
        out = jax.lax.map(jax.checkpoint(block, prevent_cse=False), xs)
    if teacher is None:
        return TokenQuantities(unblock(out), None)
    return TokenQuantities(unblock(out[0]), unblock(out[1]))


def _kd(z_BCV, lse_BC1, ids_BCE, t_logp_BCE, t_tail_BC, distill):
    """The KD divergence of one block, from its logits and their log-sum-exp (at T = 1)."""
    t = distill.temperature
    z_top_BCE = jnp.take_along_axis(z_BCV, ids_BCE, axis=-1)
    if t == 1.0:
        s_top_BCE = z_top_BCE - lse_BC1
    else:   # the student's tempered log-probabilities need the log-sum-exp of z / T
        zt_BCV = z_BCV / jnp.float32(t)
        s_top_BCE = z_top_BCE / jnp.float32(t) - jax.nn.logsumexp(zt_BCV, axis=-1, keepdims=True)
    return terms.topk_kd_per_token(s_top_BCE, z_BCV.shape[-1], t_logp_BCE, t_tail_BC, kind=distill.kind,
                                    tail=distill.tail, temperature=t, beta=distill.beta, skew=distill.skew)


def model_token_quantities(model, batch: dict, distill=None, *, loss_chunk: int, mesh=None) -> TokenQuantities:
    """`token_quantities` of a bitjax Transformer on a batch; the KD part when `distill` is given."""
    x_BLD = model.hidden_states(batch["inputs"], batch["segment_ids"], batch["positions"])
    return token_quantities(x_BLD, model.head_matrix_VD(), batch["targets"], teacher_fields(batch, distill), distill,
                            loss_chunk=loss_chunk, mesh=mesh)


def teacher_fields(batch: dict, distill=None) -> dict | None:
    """The batch's teacher fields when the KD part is wanted (`distill` given), else None."""
    return {f: batch[f] for f in TEACHER_FIELDS} if distill is not None else None
