"""Checksums of a train state's array values, stored with each checkpoint and checked when it is read back.

Orbax's tensorstore files carry no checksum of array values: a flipped bit inside a stored array reads back
without error, as a wrong value. Each checkpoint's metadata therefore holds, per leaf, two sums of the leaf's
bytes taken as 32-bit words (modulo 2^32): the plain sum and the sum weighted by odd numbers 1, 3, 5, ...
Any single flipped bit changes both (odd weights are invertible modulo 2^32); two swapped words change the
weighted one. Computed on the devices where the state lives: one pass over the state per save.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from bitjax.sharding import path_name


def _words(x: jax.Array) -> jax.Array:
    """The leaf's bytes as uint32 words (16-bit types widened, 64-bit types split in two)."""
    if x.dtype.itemsize in (4, 8):
        return jax.lax.bitcast_convert_type(x, jnp.uint32).reshape(-1)
    if x.dtype.itemsize == 2:
        return jax.lax.bitcast_convert_type(x, jnp.uint16).reshape(-1).astype(jnp.uint32)
    return x.reshape(-1).astype(jnp.uint8).astype(jnp.uint32) if x.dtype != jnp.bool_ \
        else x.reshape(-1).astype(jnp.uint32)


def _sums(x: jax.Array) -> jax.Array:
    words = _words(x)
    odd = (2 * jnp.arange(words.size, dtype=jnp.uint32) + 1)
    return jnp.stack([jnp.sum(words, dtype=jnp.uint32), jnp.sum(words * odd, dtype=jnp.uint32)])


def checksums(tree) -> dict[str, list[int]]:
    """{dotted leaf path: [sum, odd-weighted sum]} of every array leaf, as JSON-ready ints."""
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    names = [path_name(path) for path, _ in flat]
    leaves = [leaf for _, leaf in flat]
    mesh = next((x.sharding.mesh for x in leaves if isinstance(getattr(x, "sharding", None), NamedSharding)), None)
    # replicated results, so every process of a multi-host run can read them
    out = NamedSharding(mesh, PartitionSpec()) if mesh is not None else None
    sums = jax.device_get(jax.jit(lambda xs: [_sums(jnp.asarray(x)) for x in xs], out_shardings=out)(leaves))
    return {name: [int(v) for v in np.asarray(s)] for name, s in zip(names, sums)}


META_KEY = "state_checksums"   # where a checkpoint's metadata holds them


def mismatches(tree, meta: dict, prefix: str = "") -> list[str]:
    """Paths of the leaves whose values differ from the checksums in a checkpoint's `meta`.

    `prefix`: where `tree` sits in the saved train state (e.g. "params." for the parameters alone).
    Checkpoints written before checksums existed have none, and nothing mismatches.
    """
    saved = meta.get(META_KEY) or {}
    expected = {name.removeprefix(prefix): sums for name, sums in saved.items() if name.startswith(prefix)}
    if not expected:
        return []
    return [prefix + name for name, sums in checksums(tree).items() if name in expected and expected[name] != sums]
