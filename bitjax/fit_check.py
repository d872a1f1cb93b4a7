"""Will a recipe fit a TPU slice? Compile its real train step for that topology, on a CPU, and read the cost.

With `libtpu` installed (`pip install 'bitjax[tpu]'`), `jax.experimental.topologies.get_topology_desc`
describes a TPU slice without owning one: its compile-only devices take the recipe's mesh, the train
step is lowered with the same shardings and donation as in training and compiled ahead of time by the
TPU compiler. The compiled executable reports per-device memory (arguments, outputs, temporaries,
code) and per-device FLOPs and bytes, from which this module estimates the step time (a roofline
bound: max of compute time and HBM time) and the MFU that bound implies.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re

import jax

from bitjax.config import ConfigError, TrainConfig

GIB = 1024**3


@dataclasses.dataclass(frozen=True)
class Chip:
    """Per-chip figures from Cloud TPU's system-architecture pages."""

    kind: str
    hbm_bytes: int
    peak_bf16_flops: float     # per chip, per second
    hbm_bytes_per_s: float
    megacore: bool             # two TensorCores presented as one JAX device


# HBM is what the TPU compiler reports as available to a program (a little under the nominal 32 / 16 /
# 95 / 32 GB); peak FLOP/s and bandwidth are the published per-chip figures.
CHIPS = {
    "v4": Chip("v4", int(30.75 * GIB), 275e12, 1.2e12, True),
    "v5e": Chip("v5e", int(15.75 * GIB), 197e12, 8.19e11, False),
    "v5p": Chip("v5p", int(95.74 * GIB), 459e12, 2.765e12, True),
    "v6e": Chip("v6e", int(31.25 * GIB), 918e12, 1.64e12, False),
}

# Chip grids of the slice shapes Cloud TPU sells. v4 and v5p names count TensorCores (2 per chip),
# v5e and v6e names count chips.
_GRIDS_3D = {4: "2x2x1", 8: "2x2x2", 16: "2x2x4", 32: "2x4x4", 64: "4x4x4", 128: "4x4x8", 256: "4x8x8",
             512: "8x8x8", 1024: "8x8x16", 2048: "8x16x16"}
_GRIDS_2D = {1: "1x1", 4: "2x2", 8: "2x4", 16: "4x4", 32: "4x8", 64: "8x8", 128: "8x16", 256: "16x16"}


@dataclasses.dataclass(frozen=True)
class Topology:
    name: str                  # what users type: v4-8, v5e-16, v5p-64, v6e-8
    topology_name: str         # what libtpu parses: "v4:2x2x1", "v5e:4x4"
    chip: Chip
    chips_per_host_bounds: tuple[int, int, int]
    n_chips: int


def _topologies() -> dict[str, Topology]:
    out = {}
    for kind in ("v4", "v5p"):
        for chips, grid in _GRIDS_3D.items():
            name = f"{kind}-{2 * chips}"
            out[name] = Topology(name, f"{kind}:{grid}", CHIPS[kind], (2, 2, 1), chips)
    for kind in ("v5e", "v6e"):
        for chips, grid in _GRIDS_2D.items():
            name = f"{kind}-{chips}"
            # Single-host slices hold up to 8 chips on one VM; bigger ones 4 chips (2x2) per host.
            bounds = (1, 1, 1) if chips == 1 else (2, 4, 1) if chips == 8 else (2, 2, 1)
            out[name] = Topology(name, f"{kind}:{grid}", CHIPS[kind], bounds, chips)
    return out


TOPOLOGIES = _topologies()


def topology(name: str) -> Topology:
    if name not in TOPOLOGIES:
        raise ConfigError(f"unknown TPU topology {name!r}; known: {', '.join(TOPOLOGIES)}")
    return TOPOLOGIES[name]


def tpu_devices(topo: Topology) -> list:
    """Compile-only devices of the slice (one per chip; megacore chips count once)."""
    if importlib.util.find_spec("libtpu") is None:
        raise ConfigError("fit-check needs libtpu to compile for TPUs; install it with "
                          "`pip install 'bitjax[tpu]'` (and keep JAX_PLATFORMS=cpu on a CPU machine)")
    from jax.experimental import topologies
    desc = topologies.get_topology_desc(
        topology_name=topo.topology_name, platform="tpu",
        chip_config_name="megacore" if topo.chip.megacore else "default",
        chips_per_host_bounds=topo.chips_per_host_bounds, num_slices=1, wrap=(False, False, False))
    return list(desc.devices)


@dataclasses.dataclass(frozen=True)
class FitReport:
    """Per-device figures of the compiled step; when the TPU compiler refused it for lack of HBM, only
    its requirement (`oom`) is known."""

    recipe: str
    topology: Topology
    mesh: dict[str, int]
    global_batch: int
    seq_len: int
    model_flops: float                 # 6 N T + attention, whole step, all devices (the MFU numerator)
    argument_bytes: int = 0            # state + batch (donated state buffers are reused by the outputs)
    output_bytes: int = 0
    alias_bytes: int = 0               # outputs written in place of donated arguments
    temp_bytes: int = 0                # activations kept for the backward pass, gradients, scratch
    code_bytes: int = 0
    flops_per_device: float = 0.0      # compiled cost of one step
    bytes_accessed_per_device: float = 0.0
    oom: str | None = None             # the compiler's out-of-memory message
    oom_required_bytes: int = 0        # what that message says the program needs

    @property
    def total_bytes(self) -> int:
        if self.oom:
            return self.oom_required_bytes
        return self.argument_bytes + self.output_bytes - self.alias_bytes + self.temp_bytes + self.code_bytes

    @property
    def headroom_bytes(self) -> int:
        return self.topology.chip.hbm_bytes - self.total_bytes

    @property
    def fits(self) -> bool:
        return self.oom is None and self.headroom_bytes >= 0

    @property
    def step_seconds(self) -> float:
        """Roofline estimate: the slower of the chip's peak compute and its HBM bandwidth."""
        chip = self.topology.chip
        return max(self.flops_per_device / chip.peak_bf16_flops,
                   self.bytes_accessed_per_device / chip.hbm_bytes_per_s)

    @property
    def mfu(self) -> float:
        n = self.topology.n_chips
        return self.model_flops / (n * self.topology.chip.peak_bf16_flops * self.step_seconds)

    def render(self) -> str:
        chip = self.topology.chip
        mesh = " x ".join(f"{a}={s}" for a, s in self.mesh.items())
        tokens = self.global_batch * self.seq_len
        lines = [
            f"fit-check {self.recipe} on {self.topology.name} ({self.topology.n_chips} {chip.kind} chips, "
            f"topology {self.topology.topology_name}, {_gib(chip.hbm_bytes)} HBM per chip)",
            f"  mesh {mesh}; global batch {self.global_batch} x {self.seq_len} = {tokens:,} tokens/step; "
            f"{self.model_flops:.3e} model FLOPs/step",
        ]
        if self.oom:
            lines.append(f"  the TPU compiler ran out of HBM: {self.oom}")
        else:
            lines += [
                "  per-device memory (compiled):",
                f"    arguments    {_gib(self.argument_bytes):>10}   (state + batch)",
                f"    outputs      {_gib(self.output_bytes):>10}   "
                f"({_gib(self.alias_bytes)} of them in donated buffers)",
                f"    temporaries  {_gib(self.temp_bytes):>10}",
                f"    code         {_gib(self.code_bytes):>10}",
                f"    total        {_gib(self.total_bytes):>10}   of {_gib(chip.hbm_bytes)}",
                f"  compiled FLOPs per step {self.flops_per_device:.3e} per device",
                f"  estimated step time {self.step_seconds * 1e3:.1f} ms (roofline bound at "
                f"{chip.peak_bf16_flops / 1e12:.0f} TFLOP/s and {chip.hbm_bytes_per_s / 1e9:.0f} GB/s per chip): "
                f"{tokens / self.step_seconds:,.0f} tokens/s, MFU {self.mfu:.0%} at that bound",
            ]
        if self.fits:
            lines.append(f"  FITS: {_gib(self.total_bytes)} of {_gib(chip.hbm_bytes)} per chip, "
                         f"{_gib(self.headroom_bytes)} ({self.headroom_bytes / chip.hbm_bytes:.0%}) to spare")
        else:
            lines.append(f"  DOES NOT FIT: needs {_gib(self.total_bytes)} per chip, {_gib(-self.headroom_bytes)} "
                         f"({-self.headroom_bytes / chip.hbm_bytes:.0%}) more than the {_gib(chip.hbm_bytes)} "
                         "available; raise mesh.fsdp, lower data.batch_size, set model.remat=full, "
                         "or use a bigger slice")
        return "\n".join(lines)


def _gib(n: int) -> str:
    return f"{n / GIB:.2f} GiB"


_OOM = re.compile(r"memory required for .*?\(([\d.]+)([KMGT])\) exceeds available HBM \(([\d.]+)([KMGT])\)")


def _parse_oom(message: str) -> tuple[str, int]:
    """The one-line gist of the TPU compiler's out-of-HBM error and the bytes it says are needed."""
    line = next((x for x in message.splitlines() if "HBM" in x), message.splitlines()[0]).strip()
    line = line.replace("RESOURCE_EXHAUSTED: ", "")
    match = _OOM.search(message)
    scale = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    required = int(float(match.group(1)) * scale[match.group(2)]) if match else 0
    return line, required


def model_flops_per_step(cfg: TrainConfig) -> float:
    """Training FLOPs of one step (PaLM appendix B): 6 N T for the matmuls, N counting the tied LM head
    but not the embedding lookup, plus 12 * layers * heads * head_dim * L * T for attention."""
    from bitjax.model import count_params
    m, tokens = cfg.model, cfg.data.batch_size * cfg.data.seq_len
    counts = count_params(m)
    n_matmul = counts["non_embedding"] + counts["embedding"]
    return 6.0 * n_matmul * tokens + 12.0 * m.n_layers * m.n_heads * m.head_dim * cfg.data.seq_len * tokens


def fit_check(cfg: TrainConfig, topology_name: str, recipe: str = "recipe", teacher_k: int | None = None
              ) -> FitReport:
    """Compile `cfg`'s train step for the named TPU slice (ahead of time, on this machine).

    When a source distils ("kd") the batch carries the cache's teacher fields (top `teacher_k` per
    position, default distill.k), so the KD loss is part of the compiled step, as in training.
    """
    from bitjax import sharding as sharding_lib
    from bitjax.train import Trainer

    topo = topology(topology_name)
    devices = tpu_devices(topo)
    trainer = Trainer.create(cfg, devices=devices)
    batch_sharding = sharding_lib.batch_sharding(trainer.mesh)
    abstract_batch = {name: jax.ShapeDtypeStruct(shape, dtype, sharding=batch_sharding)
                      for name, (shape, dtype) in trainer.batch_shapes(teacher_k).items()}
    common = dict(recipe=recipe, topology=topo, mesh=dict(trainer.mesh.shape), global_batch=cfg.data.batch_size,
                  seq_len=cfg.data.seq_len, model_flops=model_flops_per_step(cfg))
    lowered = trainer.jit_train_step().lower(trainer.abstract_state(), abstract_batch)
    try:
        compiled = lowered.compile()
    except jax.errors.JaxRuntimeError as e:
        if "RESOURCE_EXHAUSTED" not in str(e):
            raise
        oom, required = _parse_oom(str(e))
        return FitReport(**common, oom=oom, oom_required_bytes=required)
    memory = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return FitReport(
        **common,
        argument_bytes=memory.argument_size_in_bytes, output_bytes=memory.output_size_in_bytes,
        alias_bytes=memory.alias_size_in_bytes, temp_bytes=memory.temp_size_in_bytes,
        code_bytes=memory.generated_code_size_in_bytes,
        flops_per_device=float(cost.get("flops", 0.0)),
        bytes_accessed_per_device=float(cost.get("bytes accessed", 0.0)),
    )


def pin_cpu_platform() -> None:
    """With libtpu installed every JAX start looks for a TPU; fit-check runs on the CPU by design."""
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
