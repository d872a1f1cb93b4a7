"""A trained run loaded for use (eval, export, generation, teaching): its config, tokenizer and parameters.

    run = Run("runs/tiny")                  # config, tokenizer, latest step; nothing restored yet
    model = run.model()                     # parameters only, restored onto the devices present now
    logits_BLV = model(tokens_BL)

`Run` restores the parameters alone (not Adam's moments) onto a mesh of whatever devices this process has,
so a run trained on a pod slice is evaluated or exported on one CPU. The directory's layout is
bitjax.run.layout.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from flax import nnx

from bitjax import sharding as sharding_lib
from bitjax.config import MeshConfig
from bitjax.errors import ConfigError
from bitjax.nn import layer_stack
from bitjax.nn.layers import QuantStrength
from bitjax.nn.transformer import Transformer, quant_strengths
from bitjax.paths import absolute, local_copy, user_path
from bitjax.run import checksums as state_checksum
from bitjax.run import legacy_layers, restore_faults
from bitjax.run.layout import RunPaths, checkpoint_steps, load_run_config
from bitjax.run.restore_faults import CheckpointDamagedError


def inference_mesh(devices=None) -> jax.sharding.Mesh:
    """All devices present on the fsdp axis: parameters are split when there are several, whole on one."""
    return sharding_lib.make_mesh(MeshConfig(data=1, fsdp=-1, tensor=1, distributed="off"), devices)


class Run:
    """A trained run directory: its config, tokenizer and one checkpoint's parameters (restored on first use)."""

    def __init__(self, run_dir: str | Path, step: int | None = None, *, devices=None):
        self.dir = user_path(run_dir, "run directory")
        self.paths = RunPaths(self.dir)
        if not self.dir.is_dir():
            raise ConfigError(f"run directory {self.dir} does not exist; pass a directory written by `bitjax train`")
        self.config = load_run_config(self.dir)
        steps = checkpoint_steps(self.paths.checkpoints)
        if not steps:
            raise ConfigError(f"{self.dir} holds no checkpoint (nothing under {self.paths.checkpoints}); train "
                              f"into it first: bitjax train RECIPE --workdir {self.dir}")
        if step is not None and step not in steps:
            raise ConfigError(f"{self.paths.checkpoints} has no checkpoint of step {step}; it has steps "
                              f"{', '.join(map(str, steps))}")
        self.step = steps[-1] if step is None else step
        if not self.paths.tokenizer.is_file():
            raise ConfigError(f"{self.paths.tokenizer} is missing; the run's tokenizer is needed to read text "
                              "(rerun `bitjax train` with this --workdir to restore it)")
        self.tokenizer_path = local_copy(self.paths.tokenizer)   # the tokenizers library opens local files only
        self.mesh = inference_mesh(devices)
        abstract = nnx.eval_shape(lambda: Transformer(self.config.model, rngs=nnx.Rngs(0)))
        self.graphdef, abstract_params, quant_vars = nnx.split(abstract, nnx.Param, QuantStrength)
        self._abstract_params = abstract_params
        self._quant_vars = quant_vars

    @property
    def name(self) -> str:
        return self.config.name

    @functools.cached_property
    def params(self) -> nnx.State:
        """The checkpoint's latent parameters, placed on this process's devices by the sharding table."""
        shardings = sharding_lib.tree_shardings(self._abstract_params, self.mesh)
        target = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                              self._abstract_params, shardings)
        return restore_params(self.paths.checkpoints, self.step, target)

    def model_builder(self, *, quantize_activations: bool = True, lam: float = 1.0):
        """params -> Transformer, for functions that take the parameters as an argument (jit, generation)."""
        graphdef = self.graphdef
        # The int8 matmul holds the strength at 1: any other lambda takes the fake-quantized path.
        cfg = dataclasses.replace(self.config.model, quantize_activations=quantize_activations,
                                  int8_matmul=self.config.model.int8_matmul and lam == 1)
        if cfg != self.config.model:
            graphdef = nnx.split(nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0))), nnx.Param,
                                 QuantStrength)[0]
        quant_vars = quant_strengths(cfg, self._quant_vars, lam)
        return lambda params: nnx.merge(graphdef, params, quant_vars)

    def model(self, *, quantize_activations: bool = True, lam: float = 1.0) -> Transformer:
        """The network with this run's parameters (fully quantized by default, as exported)."""
        return self.model_builder(quantize_activations=quantize_activations, lam=lam)(self.params)

    def flat_params(self) -> dict[str, np.ndarray]:
        """{"layers.0.self_attn.q_proj.kernel": array, ...} as host numpy arrays (what exporters read).

        Read straight into numpy when the device parameters were not restored: no device copy is made.
        """
        params = self.__dict__.get("params")
        if params is None:
            restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), self._abstract_params)
            params = restore_params(self.paths.checkpoints, self.step, self._abstract_params, restore_args)
        return layer_stack.flat_per_layer(params)


def restore_params(checkpoints: epath.Path, step: int, target_params, restore_args=None):
    """Only the `params` of a checkpoint's train state: Adam's moments and the step are never read.

    `restore_args` default to placing each leaf with the target's sharding (ShapeDtypeStructs with shardings).
    Damage to the checkpoint and faults of this machine are one-line errors (bitjax.run.restore_faults).
    """
    manager = ocp.CheckpointManager(absolute(user_path(checkpoints, "checkpoint directory")),
                                    options=ocp.CheckpointManagerOptions(create=False))
    restore_faults.quiet_closed_loop_callbacks()
    try:
        return _read_params(manager, checkpoints, step, target_params, restore_args)
    except Exception as e:   # noqa: BLE001 - damage, a fault of this machine, or a bug (re-raised as it is)
        restore_faults.raise_classified(e, step, checkpoints, damaged_fix=(
            "use another step, or rerun `bitjax train` with this workdir, which sets a damaged newest step aside"))
    finally:
        manager.close()


def _read_params(manager, checkpoints: epath.Path, step: int, target_params, restore_args):
    item_dir = Path(checkpoints).absolute() / str(step) / "state"
    if legacy_layers.has_per_layer_names(item_dir):   # written before the blocks were stacked
        to_host = any(getattr(x, "sharding", None) is None for x in jax.tree.leaves(target_params))
        return legacy_layers.restore_stacked(item_dir, {"params": target_params}, to_host=to_host)["params"]
    restore_args = restore_args or ocp.checkpoint_utils.construct_restore_args(target_params)
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
        item={"params": target_params}, restore_args={"params": restore_args}, partial_restore=True)))
    meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    params = restored["state"]["params"]
    # a partial restore hands back the target itself for a leaf the checkpoint's metadata does not list
    missing = [sharding_lib.path_name(path) for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]
               if isinstance(leaf, jax.ShapeDtypeStruct)]
    if missing:
        raise CheckpointDamagedError(step, checkpoints, f"its state lacks {len(missing)} parameter(s), e.g. "
                                     f"{missing[0]}")
    bad = state_checksum.mismatches(params, meta, prefix="params.")
    if bad:
        raise CheckpointDamagedError(step, checkpoints, f"the stored values of {len(bad)} array(s) do not match the "
                                     f"checksums saved with them, e.g. {bad[0]}")
    return params
