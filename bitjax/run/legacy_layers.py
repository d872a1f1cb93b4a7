"""Checkpoints written before the blocks were stacked: per-layer names (`params.layers.3.mlp.up_proj.kernel`).

Such a checkpoint restores into today's stacked state: each per-layer array is read into the sharding of its
stacked parameter less the layer axis, and the layers are stacked on device. Nothing is rewritten on disk; the
next save writes the stacked layout.
"""

from __future__ import annotations

import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from bitjax.nn.layer_stack import PREFIX, path_name

_PER_LAYER = re.compile(rf"(^|\.){PREFIX}\.(\d+)\.")


def _saved_names(item_dir: epath.Path) -> tuple[dict[str, Any], Any]:
    """{dotted name: saved key path} of an Orbax PyTree item, and its metadata tree (nothing is read)."""
    tree = ocp.PyTreeCheckpointHandler().metadata(epath.Path(item_dir))
    return {path_name(p): p for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]}, tree


def has_per_layer_names(item_dir: str | epath.Path) -> bool:
    """Whether an Orbax PyTree item (e.g. `checkpoints/100/state`) holds the per-layer layout."""
    names, _ = _saved_names(epath.Path(item_dir))
    return any(_PER_LAYER.search(name) for name in names)


def _stacked_name(name: str) -> tuple[str, int] | None:
    match = _PER_LAYER.search(name)
    if match is None:
        return None
    return name[:match.start(2)] + name[match.end(2) + 1:], int(match.group(2))


def restore_stacked(item_dir: str | epath.Path, target: Any, *, to_host: bool = False) -> Any:
    """A per-layer item restored into `target`'s stacked tree (leaves: ShapeDtypeStructs with shardings).

    Only the names `target` holds are read (the rest of the item is skipped); `to_host` gives numpy arrays.
    """
    item_dir = epath.Path(item_dir)  # may be a bucket
    saved, tree = _saved_names(item_dir)
    wanted = {path_name(p): leaf for p, leaf in jax.tree_util.tree_flatten_with_path(target)[0]}

    def arg(key_path, meta):
        name = path_name(key_path)
        stacked = _stacked_name(name)
        leaf = wanted.get(stacked[0] if stacked else name)
        if leaf is None:
            return ocp.PLACEHOLDER
        if to_host:
            return ocp.RestoreArgs(restore_type=np.ndarray)
        spec = tuple(leaf.sharding.spec)[1:] if stacked else tuple(leaf.sharding.spec)
        return ocp.ArrayRestoreArgs(sharding=NamedSharding(leaf.sharding.mesh, P(*spec)), dtype=leaf.dtype)

    restore_args = jax.tree_util.tree_map_with_path(arg, tree)
    item = jax.tree.map(lambda meta, a: ocp.PLACEHOLDER if a is ocp.PLACEHOLDER else meta, tree, restore_args,
                        is_leaf=lambda x: x is ocp.PLACEHOLDER)
    restored = ocp.PyTreeCheckpointer().restore(
        item_dir, args=ocp.args.PyTreeRestore(item=item, restore_args=restore_args))
    flat, layers = {}, {}
    for key_path, value in jax.tree_util.tree_flatten_with_path(restored)[0]:
        if value is ocp.PLACEHOLDER:
            continue
        name = path_name(key_path)
        stacked = _stacked_name(name)
        if stacked is None:
            flat[name] = value
        else:
            layers.setdefault(stacked[0], {})[stacked[1]] = value
    missing = sorted(set(wanted) - set(flat) - set(layers))
    if missing:
        raise KeyError(f"{item_dir} has no {missing[0]}")

    def fill(key_path, leaf):
        name = path_name(key_path)
        if name not in layers:
            return flat[name]
        parts = [layers[name][i] for i in range(len(layers[name]))]
        if to_host:
            return np.stack(parts)
        return jax.jit(lambda *xs: jnp.stack(xs), out_shardings=leaf.sharding)(*parts)

    return jax.tree_util.tree_map_with_path(fill, target)
