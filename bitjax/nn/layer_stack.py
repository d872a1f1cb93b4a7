"""The one conversion between stacked block storage and the per-layer view of parameter names.

The Transformer stores its blocks stacked: every block variable has a leading layer axis, so
`layers.mlp.gate_proj.kernel` is (n_layers, D, F) and the jitted step scans one block body. Everything that
names tensors per layer (export, pretrained import, init_from, Run.flat_params, the `zeros/*` metrics) speaks
`layers.3.mlp.gate_proj.kernel`, the Hugging Face / llama.cpp layout, and goes through this module.
"""

from __future__ import annotations

import re
from typing import Any, Callable

import jax
import numpy as np

PREFIX = "layers"
# `layers.<not a digit>`: a stacked path; optimizer moments carry it as a suffix (`0.mu.layers.mlp...`).
_STACKED = re.compile(rf"(^|\.){PREFIX}\.(?!\d+(\.|$))")
_PER_LAYER = re.compile(rf"^{PREFIX}\.(\d+)\.(.+)$")


def path_name(key_path) -> str:
    """`layers.mlp.gate_proj.kernel` for a pytree key path (nnx's trailing `.value` dropped)."""
    parts = [str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in key_path]
    if parts and parts[-1] == "value":
        parts = parts[:-1]
    return ".".join(parts)


def is_stacked(name: str) -> bool:
    """Whether a dotted path names a stacked block variable (leading layer axis)."""
    return bool(_STACKED.search(name))


def unstack(flat: dict[str, Any]) -> dict[str, Any]:
    """{"layers.mlp.up_proj.kernel": (n_layers, ...)} -> {"layers.0.mlp.up_proj.kernel": (...), ...}.

    Other names pass through; per-layer names come out in layer order, after the other names.
    """
    out = {name: value for name, value in flat.items() if not is_stacked(name)}
    stacked = {name: value for name, value in flat.items() if is_stacked(name)}
    n_layers = len(next(iter(stacked.values()))) if stacked else 0
    for i in range(n_layers):
        for name, value in stacked.items():
            out[name.replace(f"{PREFIX}.", f"{PREFIX}.{i}.", 1)] = value[i]
    return out


def stack(flat: dict[str, Any]) -> dict[str, Any]:
    """The inverse of `unstack`: per-layer names gathered into one (n_layers, ...) numpy array per name."""
    out, per_layer = {}, {}
    for name, value in flat.items():
        match = _PER_LAYER.match(name)
        if match is None:
            out[name] = value
        else:
            per_layer.setdefault(f"{PREFIX}.{match.group(2)}", {})[int(match.group(1))] = value
    for name, layers in per_layer.items():
        if sorted(layers) != list(range(len(layers))):
            raise ValueError(f"{name}: layers {sorted(layers)} are not 0..{len(layers) - 1}")
        out[name] = np.stack([np.asarray(layers[i]) for i in range(len(layers))])
    return out


def map_per_layer(fn: Callable[[str, jax.ShapeDtypeStruct], Any], tree: Any) -> Any:
    """`fn(per-layer name, per-layer shape)` for every leaf of a parameter tree, results stacked where stored so.

    For a stacked leaf, `fn` is called once per layer (`layers.N.<...>`, shape without the layer axis) and the
    results are stacked; other leaves get one call with their own name and shape.
    """
    def one(key_path, leaf):
        name = path_name(key_path)
        if not is_stacked(name):
            return fn(name, jax.ShapeDtypeStruct(tuple(leaf.shape), leaf.dtype))
        layer = jax.ShapeDtypeStruct(tuple(leaf.shape[1:]), leaf.dtype)
        parts = [fn(name.replace(f"{PREFIX}.", f"{PREFIX}.{i}.", 1), layer) for i in range(leaf.shape[0])]
        return jax.numpy.stack(parts)

    return jax.tree_util.tree_map_with_path(one, tree)


def per_layer_shapes(tree: Any) -> dict[str, jax.ShapeDtypeStruct]:
    """{per-layer name: shape and dtype} of a (possibly abstract) parameter tree, in `unstack` order."""
    flat = {path_name(p): leaf for p, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}
    out = {name: jax.ShapeDtypeStruct(tuple(leaf.shape), leaf.dtype) for name, leaf in flat.items()
           if not is_stacked(name)}
    n_layers = next((leaf.shape[0] for name, leaf in flat.items() if is_stacked(name)), 0)
    for i in range(n_layers):
        for name, leaf in flat.items():
            if is_stacked(name):
                out[name.replace(f"{PREFIX}.", f"{PREFIX}.{i}.", 1)] = jax.ShapeDtypeStruct(
                    tuple(leaf.shape[1:]), leaf.dtype)
    return out


def flat_per_layer(tree: Any) -> dict[str, np.ndarray]:
    """A parameter tree as {"layers.0.self_attn.q_proj.kernel": host array, ...} (the per-layer view)."""
    return unstack({path_name(p): np.asarray(leaf) for p, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]})
