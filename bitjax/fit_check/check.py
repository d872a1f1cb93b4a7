"""Will a recipe fit a TPU slice? Compile its real train step for that topology, on a CPU, and read the cost.

With `libtpu` installed (`pip install 'bitjax[tpu]'`), `jax.experimental.topologies.get_topology_desc`
describes a TPU slice without owning one: its compile-only devices take the recipe's mesh, the train
step is lowered with the same shardings and donation as in training and compiled ahead of time by the
TPU compiler. The compiled executable reports per-device memory (arguments, outputs, temporaries,
code): the acceptance figures. The step time is an estimate, a roofline bound: the slower of the compute
term (analytic FLOPs, bitjax.fit_check.flops) and the HBM term (the compiler's bytes accessed), and the MFU that bound
implies. `sweep` varies one setting and attributes the memory to it; `hlo_dir` keeps XLA's dump files.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import time

import jax
from jax.sharding import Mesh

from bitjax import sharding as sharding_lib
from bitjax.config import ModelConfig, TrainConfig, apply_overrides
from bitjax.errors import ConfigError
from bitjax.fit_check import flops, hlo_facts
from bitjax.pretrained import spec as model_spec
from bitjax.teachers import online
from bitjax.training.trainer import Trainer

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
    its requirement (`oom`) is known.

    Memory is the compiler's (a fact). The step time is an estimate: a roofline bound, the slower of the
    compute term (analytic hardware FLOPs at the chip's bf16 peak; bitjax.fit_check.flops says why not the compiler's
    count) and the HBM term (the compiler's bytes accessed at the chip's bandwidth).
    """

    recipe: str
    topology: Topology
    mesh: dict[str, int]
    global_batch: int
    seq_len: int
    model_flops: float                 # 6 N T + causal attention, whole step, all devices (the MFU numerator)
    hardware_flops: float              # model FLOPs + rematerialisation's recompute, all devices
    lower_seconds: float = 0.0         # wall time to trace and lower the step
    compile_seconds: float = 0.0       # wall time of the TPU compiler on this machine
    argument_bytes: int = 0            # state + batch (donated state buffers are reused by the outputs)
    output_bytes: int = 0
    alias_bytes: int = 0               # outputs written in place of donated arguments
    temp_bytes: int = 0                # activations kept for the backward pass, gradients, scratch
    code_bytes: int = 0
    compiled_flops_per_device: float = 0.0   # the compiler's count (see bitjax.fit_check.flops for what it misses)
    bytes_accessed_per_device: float = 0.0
    hlo: hlo_facts.HloFacts | None = None
    width_equals_seq_len: bool = False   # d_model, d_ff or N*H equals L: the L x L check cannot tell them apart
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
    def compute_seconds(self) -> float:
        """Hardware FLOPs of one device at the chip's bf16 peak."""
        return self.hardware_flops / self.topology.n_chips / self.topology.chip.peak_bf16_flops

    @property
    def hbm_seconds(self) -> float:
        """The compiler's bytes accessed by one device at the chip's HBM bandwidth."""
        return self.bytes_accessed_per_device / self.topology.chip.hbm_bytes_per_s

    @property
    def bound(self) -> str:
        return "compute" if self.compute_seconds >= self.hbm_seconds else "HBM"

    @property
    def step_seconds(self) -> float:
        """Roofline estimate: the slower of the two terms."""
        return max(self.compute_seconds, self.hbm_seconds)

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
            f"{self.model_flops:.3e} model FLOPs/step ({self.hardware_flops:.3e} with recompute)",
            f"  lowered in {self.lower_seconds:.1f} s, compiled in {self.compile_seconds:.1f} s on this machine",
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
                f"  roofline terms per step: compute {self.compute_seconds * 1e3:.1f} ms (analytic FLOPs at "
                f"{chip.peak_bf16_flops / 1e12:.0f} TFLOP/s), HBM {self.hbm_seconds * 1e3:.1f} ms (compiled "
                f"{self.bytes_accessed_per_device / 1e9:.1f} GB at {chip.hbm_bytes_per_s / 1e9:.0f} GB/s); "
                f"{self.bound} binds",
                f"  estimated step time {self.step_seconds * 1e3:.1f} ms: {tokens / self.step_seconds:,.0f} tokens/s, "
                f"MFU {self.mfu:.0%} at that bound (an estimate; memory above is the compiler's)",
                f"  compiler's own FLOP count {self.compiled_flops_per_device:.3e} per device, extrapolated from "
                f"unrolled depths 1 and 2 (analytic {self.hardware_flops / self.topology.n_chips:.3e}; Pallas "
                "kernels count as nothing)",
            ]
            if self.hlo is not None:
                lines.append(f"  compiled step: {hlo_facts.describe(self.hlo)}")
                if self.width_equals_seq_len:
                    lines.append(f"    (a model width equals L = {self.seq_len}: (B, L, width) activations match "
                                 "the L x L pattern too)")
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
    """Model FLOPs of one step (bitjax.fit_check.flops): the MFU numerator."""
    return flops.step_flops(cfg.model, cfg.data.batch_size, cfg.data.seq_len)[0]


def fit_check(cfg: TrainConfig, topology_name: str, recipe: str = "recipe", teacher_k: int | None = None,
              hlo_dir: str | None = None) -> FitReport:
    """Compile `cfg`'s train step for the named TPU slice (ahead of time, on this machine).

    When a source distils ("kd") the batch carries the cache's teacher fields (top `teacher_k` per
    position, default distill.k), so the KD loss is part of the compiled step, as in training.
    `hlo_dir`: the TPU compiler also writes its HLO before and after optimisation, the buffer assignment
    and a memory-usage report there (XLA's own dump files).
    """
    topo = topology(topology_name)
    model_flops, hardware_flops = flops.step_flops(cfg.model, cfg.data.batch_size, cfg.data.seq_len)
    if cfg.distill.online:   # the teacher's forward runs in the step too: hardware work, not the student's MFU
        hardware_flops += flops.forward_flops(teacher_config(cfg), cfg.data.batch_size, cfg.data.seq_len)
    started = time.perf_counter()
    lowered, mesh = lower_step(cfg, topo, teacher_k)
    common = dict(recipe=recipe, topology=topo, mesh=dict(mesh.shape), global_batch=cfg.data.batch_size,
                  seq_len=cfg.data.seq_len, model_flops=model_flops, hardware_flops=hardware_flops,
                  lower_seconds=time.perf_counter() - started)
    options = {"xla_dump_to": str(hlo_dir), "xla_dump_hlo_as_text": True} if hlo_dir else None
    started = time.perf_counter()
    try:
        compiled = lowered.compile(compiler_options=options)
    except jax.errors.JaxRuntimeError as e:
        if "RESOURCE_EXHAUSTED" not in str(e):
            raise
        oom, required = _parse_oom(str(e))
        return FitReport(**common, compile_seconds=time.perf_counter() - started, oom=oom,
                         oom_required_bytes=required)
    compile_seconds = time.perf_counter() - started
    memory = compiled.memory_analysis()
    step_flops, step_bytes = unrolled_cost(cfg, topo, teacher_k)
    shape = mesh.shape
    rows = max(cfg.data.batch_size // (shape["data"] * shape["fsdp"]), 1)
    vocab = cfg.model.vocab_size // shape["tensor"] if cfg.model.vocab_size % shape["tensor"] == 0 \
        else cfg.model.vocab_size
    return FitReport(
        **common, compile_seconds=compile_seconds,
        argument_bytes=memory.argument_size_in_bytes, output_bytes=memory.output_size_in_bytes,
        alias_bytes=memory.alias_size_in_bytes, temp_bytes=memory.temp_size_in_bytes,
        code_bytes=memory.generated_code_size_in_bytes,
        compiled_flops_per_device=step_flops, bytes_accessed_per_device=step_bytes,
        hlo=hlo_facts.facts(compiled.as_text(), seq_len=cfg.data.seq_len, vocab_size=vocab, rows=rows),
        width_equals_seq_len=cfg.data.seq_len in (cfg.model.d_model, cfg.model.d_ff,
                                                  cfg.model.n_heads * cfg.model.head_dim),
    )


def _cost(compiled) -> tuple[float, float]:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost.get("flops", 0.0)), float(cost.get("bytes accessed", 0.0))


def unrolled_cost(cfg: TrainConfig, topo: Topology, teacher_k: int | None = None) -> tuple[float, float]:
    """Per-device FLOPs and HBM bytes of the whole step, as the compiler counts them.

    XLA's cost analysis counts a loop body once: the scanned layers and the chunked loss would be priced as
    one layer and one chunk. So the step is compiled twice more with no loops (layers unrolled, one loss block)
    at depths 1 and 2, and the per-layer difference is extrapolated to the recipe's depth:
    cost(n) = cost(1) + (n - 1) * (cost(2) - cost(1)). Kernels without a cost estimate (splash attention)
    count as nothing in both: their FLOPs are in the analytic compute term, their bytes are left out.
    """

    def compile_cost(depth: int, loss_chunk: int) -> tuple[float, float]:
        shallow = apply_overrides(cfg, [f"model.n_layers={depth}", "model.scan_layers=false",
                                        f"loss_chunk={loss_chunk}"])
        return _cost(lower_step(shallow, topo, teacher_k)[0].compile())

    try:
        costs = [compile_cost(depth, cfg.data.seq_len) for depth in (1, 2)]
    except jax.errors.JaxRuntimeError as e:
        if "RESOURCE_EXHAUSTED" not in str(e):
            raise
        # the whole-sequence loss block does not fit this slice: keep the recipe's blocks (the loss loop's body
        # is then counted once, so the HBM term is a lower bound)
        costs = [compile_cost(depth, cfg.loss_chunk) for depth in (1, 2)]
    (f1, b1), (f2, b2) = costs
    n = cfg.model.n_layers
    return f1 + (n - 1) * (f2 - f1), b1 + (n - 1) * (b2 - b1)


def sweep(cfg: TrainConfig, topology_name: str, key: str, values: list[str], recipe: str = "recipe",
          teacher_k: int | None = None) -> list[tuple[str, FitReport]]:
    """fit-check `cfg` once per value of the `--set` key (e.g. model.n_layers=2,4,8): which part of the
    memory grows with what."""

    return [(value, fit_check(apply_overrides(cfg, [f"{key}={value}"]), topology_name, recipe, teacher_k))
            for value in values]


def render_sweep(key: str, rows: list[tuple[str, FitReport]]) -> str:
    lines = [f"{key:>20} {'arguments':>11} {'temporaries':>12} {'total':>11} {'est. step':>10} {'MFU':>5} "
             f"{'compile':>8}  L x L / f32 logits arrays"]
    for value, r in rows:
        if r.oom:
            lines.append(f"{value:>20} {'':>11} {'':>12} {_gib(r.total_bytes):>11}  out of HBM")
            continue
        arrays = f"{len(r.hlo.score_buffers)} / {len(r.hlo.full_logits_f32)}" if r.hlo else "-"
        lines.append(f"{value:>20} {_gib(r.argument_bytes):>11} {_gib(r.temp_bytes):>12} {_gib(r.total_bytes):>11} "
                     f"{r.step_seconds * 1e3:>7.1f} ms {r.mfu:>5.0%} {r.compile_seconds:>6.1f} s  {arrays}")
    return "\n".join(lines)


def teacher_config(cfg: TrainConfig) -> ModelConfig:
    """The online teacher's architecture, read from its metadata (no weights); when the files are not on this
    machine and the teacher is the model the student was converted from (self-distillation), the student's own
    shape at full precision, which init_from holds the source to."""
    spec = model_spec.parse(cfg.distill.teacher, "distill.teacher", check=False)
    if spec.is_embedded or spec.path.exists():
        return model_spec.model_config(model_spec.parse(cfg.distill.teacher, "distill.teacher"))
    if cfg.distill.teacher == cfg.init_from:
        return dataclasses.replace(cfg.model, quant="none", int8_matmul=False, full_precision_layers=())
    raise ConfigError(f"distill.teacher={cfg.distill.teacher}: {spec.path} is not on this machine, and fit-check "
                      "compiles the online teacher into the step from its config; copy its config.json (or the "
                      "GGUF) there")


def lower_step(cfg: TrainConfig, topo: Topology, teacher_k: int | None = None) -> tuple[jax.stages.Lowered, Mesh]:
    """The train step of `cfg` lowered for the slice's compile-only devices, and the mesh it runs on. With
    `distill.online` the teacher's forward is compiled in, its parameters placed as shapes."""

    trainer = Trainer.create(cfg, devices=tpu_devices(topo))
    args = []
    if cfg.distill.online:
        teacher = online.abstract(cfg.distill.teacher, teacher_config(cfg), cfg.model, trainer.mesh)
        trainer = dataclasses.replace(trainer, teacher=teacher)
        args = [teacher.params]
    batch_sharding = sharding_lib.batch_sharding(trainer.mesh)
    abstract_batch = {name: jax.ShapeDtypeStruct(shape, dtype, sharding=batch_sharding)
                      for name, (shape, dtype) in trainer.batch_shapes(teacher_k).items()}
    return trainer.jitted_step().lower(trainer.abstract_state(), abstract_batch, *args), trainer.mesh


def pin_cpu_platform() -> None:
    """With libtpu installed every JAX start looks for a TPU; fit-check runs on the CPU by design."""
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    # libtpu's lockfile keeps two processes off one TPU; compiling for a topology description touches no chip,
    # so two fit-checks (or a test run beside one) may load it at once
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
