"""Ternary codes that travel four to a byte: how an FSDP-split BitLinear kernel reaches the matmul at 2 bits.

Under FSDP every device holds a slice of each kernel, and the forward needs the whole kernel: the step
all-gathers it once per layer (and again in the backward's recompute). The int8 forward only reads the
kernel's ternary codes and its scale (`layers.ternarize_once` makes them once per step), so what is gathered
can be the codes packed at 2 bits, four a byte, instead of one byte (int8 codes) or four (float32 weights):

  pack      on each device, its own slice of the codes: along the split axis, a slice of 4R rows becomes R
            bytes, row i*R + r in bits 2i..2i+1 of byte r, the code stored as code + 1 in {0, 1, 2} (the
            layout of Hugging Face's packed BitNet weights, per slice). The slices stay where they were.
  gather    the packed bytes placed whole on every device (`with_sharding_constraint`: the compiler's
            all-gather, of uint8), then unpacked there to int8 codes for the matmul.

A `GatherPlan` says which axis the fsdp devices split and into how many slices (bitjax.sharding makes it from
the partition rules). Outside a mesh (no abstract mesh in the trace) the constraints are skipped and the two
steps are a lossless round trip.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

CODES_PER_BYTE = 4


@dataclasses.dataclass(frozen=True)
class GatherPlan:
    """How one layer's (in, out) kernel is split over the fsdp devices, so how its codes travel."""

    axis: int        # the kernel axis the fsdp devices split
    shards: int      # into how many slices
    sharded: P       # one layer's kernel placement (rank 2)
    gathered: P      # what the matmul reads: `sharded` without the fsdp split


def pack(codes: jax.Array, axis: int, shards: int) -> jax.Array:
    """int8 codes in {-1, 0, 1} -> uint8, `axis` shortened four times, each of the `shards` slices packed alone."""
    n = codes.shape[axis]
    if n % (shards * CODES_PER_BYTE):
        raise ValueError(f"axis {axis} of {codes.shape} is not {shards} slices of a multiple of 4")
    rows = n // (shards * CODES_PER_BYTE)
    split = codes.shape[:axis] + (shards, CODES_PER_BYTE, rows) + codes.shape[axis + 1:]
    stored = (codes.reshape(split) + 1).astype(jnp.uint8)
    packed = sum(jax.lax.index_in_dim(stored, i, axis + 1, keepdims=False) << (2 * i)
                 for i in range(CODES_PER_BYTE))
    return packed.astype(jnp.uint8).reshape(codes.shape[:axis] + (shards * rows,) + codes.shape[axis + 1:])


def unpack(packed: jax.Array, axis: int, shards: int) -> jax.Array:
    """The inverse of `pack`: uint8 -> int8 codes, `axis` four times longer."""
    n = packed.shape[axis]
    rows = n // shards
    split = packed.reshape(packed.shape[:axis] + (shards, rows) + packed.shape[axis + 1:])
    codes = jnp.stack([((split >> (2 * i)) & 3).astype(jnp.int8) - 1 for i in range(CODES_PER_BYTE)], axis + 1)
    return codes.reshape(packed.shape[:axis] + (n * CODES_PER_BYTE,) + packed.shape[axis + 1:])


def pack_for_gather(codes: jax.Array, plan: GatherPlan) -> jax.Array:
    """Pack a kernel's codes where they lie: (in, out), or stacked (layers, in, out) with one plan for all."""
    stacked = codes.ndim == 3
    packed = pack(codes, plan.axis + stacked, plan.shards)
    return _place(packed, P(None, *plan.sharded) if stacked else plan.sharded)


def gather(packed: jax.Array, plan: GatherPlan) -> jax.Array:
    """One layer's packed codes, gathered onto every device of the fsdp axis and unpacked to int8 there."""
    return unpack(_place(packed, plan.gathered), plan.axis, plan.shards)


def _place(x: jax.Array, spec: P) -> jax.Array:
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return x
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))
