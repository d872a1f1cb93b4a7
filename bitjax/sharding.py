"""The device mesh, the one table of partition rules, global batches, and multi-host start-up.

Mesh axes (`MeshConfig`):
  data    pure data parallelism: parameters replicated, the batch split
  fsdp    data parallelism with parameters and optimizer state split as well (ZeRO-3 style)
  tensor  tensor (model) parallelism: attention heads, the FFN width and the vocabulary split

The batch is split over ("data", "fsdp") together, so data * fsdp must divide the global batch.

`RULES` is the single table that places every array of a run. A parameter's path (e.g.
`layers.mlp.gate_proj.kernel`) is matched against the patterns in order; optimizer moments carry the
parameter's path as a suffix (`1.inner_state.0.mu.layers.mlp.gate_proj.kernel`), so the same row
places them; activations are named `batch.<field>` and `logits`. A dimension the mesh axis does not
divide is left unsplit (replicated) rather than failing, so small models run on any mesh.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from bitjax.errors import ConfigError, first_line, warn_once
from bitjax.nn.layer_stack import is_stacked, path_name  # noqa: F401 - path_name: the dotted path of a key path
from bitjax.nn.ternary_gather import CODES_PER_BYTE, GatherPlan

if TYPE_CHECKING:   # the mesh's settings are read, never built here: sharding sits below the config layer
    from bitjax.config import MeshConfig

AXES = ("data", "fsdp", "tensor")
BATCH = ("data", "fsdp")        # the mesh axes the batch dimension is split over

# (pattern on the dotted path, partition spec by mesh axis), first match wins.
# Kernels are stored (in, out): column-parallel layers split `out` over tensor, row-parallel ones `in`.
RULES: tuple[tuple[str, P], ...] = (
    # parameters (and, by suffix, their optimizer moments)
    (r"embed_tokens\.embedding$", P("tensor", "fsdp")),                 # (V, D)
    (r"self_attn\.[qkv]_proj\.kernel$", P("fsdp", "tensor")),           # (D, N*H) column-parallel
    (r"self_attn\.[qkv]_proj\.bias$", P("tensor")),                     # (N*H,) follows the heads
    (r"lm_head\.kernel$", P("fsdp", "tensor")),                         # (D, V) an untied head
    (r"self_attn\.o_proj\.kernel$", P("tensor", "fsdp")),               # (N*H, D) row-parallel
    (r"mlp\.(gate|up)_proj\.kernel$", P("fsdp", "tensor")),             # (D, F) column-parallel
    (r"mlp\.down_proj\.kernel$", P("tensor", "fsdp")),                  # (F, D) row-parallel
    (r"attn_sub_norm\.scale$", P("tensor")),                            # (N*H,) follows the heads
    (r"ffn_sub_norm\.scale$", P("tensor")),                             # (F,) follows the FFN width
    (r"norm\.scale$", P()),                                             # (D,) small, replicated
    # activations
    (r"^batch\.", P(BATCH)),                                            # (B, ...) rows of the batch
    (r"^logits$", P(BATCH, None, "tensor")),                            # (B, L, V)
    (r"^head$", P("tensor")),                                           # (V, D) the LM head in the loss
    # everything else: scalars (step, Adam count, injected hyperparameters)
    (r".*", P()),
)


def rule_for(path: str) -> tuple[str, P]:
    """The first row of `RULES` whose pattern matches `path`."""
    return next((pattern, spec) for pattern, spec in RULES if re.search(pattern, path))


def spec_for(path: str, shape: tuple[int, ...], mesh: Mesh) -> P:
    """The table's spec for `path`, trimmed to the array's rank, with axes that do not divide dropped.

    A stacked block variable (`layers.mlp.gate_proj.kernel`, bitjax.nn.layer_stack) gets the rule of its per-layer
    name behind an unsplit leading layer axis: the scan walks that axis, so it is never split.
    """
    pattern, spec = rule_for(path)
    if is_stacked(path):
        spec = P(None, *spec)
    if len(spec) > len(shape):
        raise ValueError(f"sharding rule {pattern!r} has rank {len(spec)} but {path} has shape {shape}")
    fitted = []
    for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
        names = (axes,) if isinstance(axes, str) else tuple(axes or ())
        size = int(np.prod([mesh.shape[a] for a in names])) if names else 1
        fitted.append(axes if names and dim % size == 0 else None)
    while fitted and fitted[-1] is None:   # P("fsdp", None) == P("fsdp"): one canonical spelling
        fitted.pop()
    return P(*fitted)


def code_gather_plan(path: str, shape: tuple[int, ...], mesh: Mesh) -> GatherPlan | None:
    """How a BitLinear kernel's ternary codes travel under FSDP (bitjax.nn.ternary_gather): packed four to a
    byte along the axis the table splits over `fsdp`. None when fsdp does not split the kernel (one device,
    or a dimension it does not divide), another axis shares that split, or a slice's length is not a multiple
    of 4 (then the int8 codes are gathered as they are)."""
    spec = spec_for(path, shape, mesh)
    entries = tuple(spec) + (None,) * (len(shape) - len(spec))
    if is_stacked(path):
        entries, shape = entries[1:], shape[1:]
    for axis, names in enumerate(entries):
        if names == "fsdp" and mesh.shape["fsdp"] > 1:
            shards = mesh.shape["fsdp"]
            if shape[axis] % (shards * CODES_PER_BYTE):
                return None
            gathered = tuple(None if i == axis else e for i, e in enumerate(entries))
            return GatherPlan(axis, shards, P(*entries), P(*gathered))
    return None


def tree_shardings(tree: Any, mesh: Mesh, prefix: str = "") -> Any:
    """NamedShardings for every leaf of `tree` (arrays or ShapeDtypeStructs), placed by `RULES`."""
    def one(key_path, leaf):
        return NamedSharding(mesh, spec_for(prefix + path_name(key_path), tuple(leaf.shape), mesh))
    return jax.tree_util.tree_map_with_path(one, tree)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Where every (B, L) batch field lives; `check_batch` guarantees the split is exact."""
    return NamedSharding(mesh, rule_for("batch.inputs")[1])


def constrain(x: jax.Array, name: str, mesh: Mesh) -> jax.Array:
    """Pin an activation named in `RULES` (e.g. "logits") to its place inside a jitted function."""
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec_for(name, x.shape, mesh)))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


# --------------------------------------------------------------------------- the mesh

def resolve_axes(cfg: MeshConfig, n_devices: int) -> dict[str, int]:
    """Axis sizes with the one `-1` axis filled in; a one-line error when they cannot cover `n_devices`."""
    sizes = {a: getattr(cfg, a) for a in AXES}
    free = [a for a, s in sizes.items() if s == -1]
    fixed = int(np.prod([s for s in sizes.values() if s != -1]))
    shown = " ".join(f"{a}={s}" for a, s in sizes.items())
    if free:
        if n_devices % fixed:
            raise ConfigError(
                f"mesh {shown}: the fixed axes ({fixed} devices) do not divide the {n_devices} devices; "
                f"choose mesh sizes whose product divides {n_devices}")
        sizes[free[0]] = n_devices // fixed
    elif fixed != n_devices:
        raise ConfigError(
            f"mesh {shown} has {fixed} devices but {n_devices} are available; make the product "
            f"data*fsdp*tensor equal {n_devices} or set one axis to -1 (e.g. --set mesh.data=-1)")
    return sizes


def make_mesh(cfg: MeshConfig, devices=None) -> Mesh:
    """A (data, fsdp, tensor) mesh over `devices` (default: all; fit-check passes compile-only TPU devices).

    `jax.make_mesh` orders the devices by their physical layout so the innermost axis (tensor) gets the
    fastest links; where it cannot (unusual device counts), they are reshaped in the order given.
    """
    devices = jax.devices() if devices is None else list(devices)
    sizes = resolve_axes(cfg, len(devices))
    shape = tuple(sizes[a] for a in AXES)
    # Auto axes: XLA's partitioner propagates shardings from the table (no explicit-sharding typing).
    auto = (jax.sharding.AxisType.Auto,) * len(AXES)
    try:
        return jax.make_mesh(shape, AXES, axis_types=auto, devices=devices)
    except (ValueError, NotImplementedError, AssertionError) as e:
        # On a pod slice this loses the interconnect layout: the tensor axis may span slow links. Said once.
        warn_once(f"the mesh data={shape[0]} fsdp={shape[1]} tensor={shape[2]} over {len(devices)} "
                  f"{devices[0].platform} devices cannot follow their physical layout ({first_line(e)}); the devices "
                  "are used in plain order, so collectives may cross slower links. Choose mesh sizes that fit the "
                  "slice's topology")
        return Mesh(np.asarray(devices).reshape(shape), AXES, axis_types=auto)


def batch_divisor(mesh: Mesh) -> int:
    return int(np.prod([mesh.shape[a] for a in BATCH]))


def check_batch(global_batch: int, mesh: Mesh) -> None:
    div = batch_divisor(mesh)
    if global_batch % div:
        raise ConfigError(
            f"data.batch_size={global_batch} is not divisible by the batch axes data*fsdp="
            f"{mesh.shape['data']}*{mesh.shape['fsdp']}={div}; use a multiple of {div}, "
            f"e.g. --set data.batch_size={max(div, global_batch - global_batch % div)}")


# --------------------------------------------------------------------------- batches

def global_batch(local_batch: dict, mesh: Mesh) -> dict[str, jax.Array]:
    """Assemble the global batch from this process's Grain shard (rows `process_index::process_count`).

    Every process passes its own rows; the result is one array per field, split over (data, fsdp).
    """
    sharding = batch_sharding(mesh)
    out = {}
    for name, local in local_batch.items():
        local = np.asarray(local)
        shape = (local.shape[0] * jax.process_count(),) + local.shape[1:]
        out[name] = jax.make_array_from_process_local_data(sharding, local, shape)
    return out


def replicated_batch(full_batch: dict, mesh: Mesh) -> dict[str, jax.Array]:
    """A batch every process holds in full (e.g. the fixed held-out set), placed like a training batch."""
    sharding = batch_sharding(mesh)
    return {name: jax.make_array_from_callback(np.shape(x), sharding, lambda idx, x=np.asarray(x): x[idx])
            for name, x in full_batch.items()}


# --------------------------------------------------------------------------- multi-host start-up

_CLUSTER_ENV = ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE")


def initialize_distributed(cfg: MeshConfig) -> bool:
    """Join the other processes of a multi-host run, before any other JAX call touches devices.

    `cfg.distributed`:
      "off"   never (one process)
      "on"    always: `jax.distributed.initialize` with the configured values, the rest auto-detected
              (Cloud TPU metadata, SLURM, Open MPI, Kubernetes)
      "auto"  when a coordinator is configured (mesh.coordinator_address or $JAX_COORDINATOR_ADDRESS)
              or a SLURM / Open MPI launch with more than one task is detected
    Process count and id come from mesh.num_processes / mesh.process_id, else $JAX_NUM_PROCESSES /
    $JAX_PROCESS_ID, else auto-detection. Returns whether this process joined a distributed run.
    """
    if cfg.distributed == "off" or jax.distributed.is_initialized():
        return jax.distributed.is_initialized()
    address = cfg.coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS") or None
    num = cfg.num_processes if cfg.num_processes > 0 else _env_int("JAX_NUM_PROCESSES")
    pid = cfg.process_id if cfg.process_id >= 0 else _env_int("JAX_PROCESS_ID")
    detected = any(_env_int(name, 1) > 1 for name in _CLUSTER_ENV)
    if cfg.distributed == "auto" and address is None and not detected:
        return False
    jax.distributed.initialize(coordinator_address=address, num_processes=num, process_id=pid)
    return True


def _env_int(name: str, default=None):
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default
