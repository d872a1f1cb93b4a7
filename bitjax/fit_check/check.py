"""Will a recipe fit a TPU slice? Compile its real train step for that topology, on a CPU, and read the cost.

With `libtpu` installed (`pip install 'bitjax[tpu]'`), `jax.experimental.topologies.get_topology_desc`
describes a TPU slice without owning one: its compile-only devices take the recipe's mesh, the train
step is lowered with the same shardings and donation as in training and compiled ahead of time by the
TPU compiler. The compiled executable reports per-device memory (arguments, outputs, temporaries,
code): the acceptance figures. The step time is an estimate, a roofline bound of three terms (compute, HBM,
collectives; bitjax.fit_check.report says how each is priced and what overlap is assumed), and the MFU that
bound implies. `sweep` varies one setting and attributes the memory to it; `compare_dense` compiles the same
recipe with quant="none" in bf16 beside it (`dense_config`); `hlo_dir` keeps XLA's dump files.
"""

from __future__ import annotations

import dataclasses
import os
import re
import time

import jax
from jax.sharding import Mesh

from bitjax import sharding as sharding_lib
from bitjax.config import ModelConfig, TrainConfig, apply_overrides
from bitjax.errors import ConfigError
from bitjax.fit_check import collectives, flops, hlo_facts
from bitjax.fit_check.hardware import Topology, topology, tpu_devices  # noqa: F401 - the slices fit-check names
from bitjax.fit_check.report import FitReport, render_comparison, render_sweep  # noqa: F401 - what it prints
from bitjax.pretrained import spec as model_spec
from bitjax.teachers import online
from bitjax.training.trainer import Trainer

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
    batch, seq_len = cfg.data.batch_size, cfg.data.seq_len
    model_flops, hardware_flops = flops.step_flops(cfg.model, batch, seq_len)
    if cfg.distill.online:   # the teacher's forward runs in the step too: hardware work, not the student's MFU
        hardware_flops += flops.forward_flops(teacher_config(cfg), batch, seq_len)
    started = time.perf_counter()
    lowered, mesh = lower_step(cfg, topo, teacher_k)
    common = dict(recipe=recipe, topology=topo, mesh=dict(mesh.shape), global_batch=batch, seq_len=seq_len,
                  model_flops=model_flops, hardware_flops=hardware_flops,
                  int8_flops=flops.int8_flops(cfg.model, batch, seq_len),
                  model_int8_flops=flops.int8_flops(cfg.model, batch, seq_len, recompute=False), quant=cfg.model.quant,
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
    text = compiled.as_text()
    return FitReport(
        **common, compile_seconds=compile_seconds, traffic=collectives.traffic(text, topo.n_chips),
        argument_bytes=memory.argument_size_in_bytes, output_bytes=memory.output_size_in_bytes,
        alias_bytes=memory.alias_size_in_bytes, temp_bytes=memory.temp_size_in_bytes,
        code_bytes=memory.generated_code_size_in_bytes,
        compiled_flops_per_device=step_flops, bytes_accessed_per_device=step_bytes,
        hlo=hlo_facts.facts(text, seq_len=cfg.data.seq_len, vocab_size=vocab, rows=rows),
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


def dense_config(cfg: TrainConfig) -> TrainConfig:
    """The same recipe as a dense network in bf16: plain Linear layers (quant="none"), bf16 compute."""
    return apply_overrides(cfg, ["model.quant=none", "model.dtype=bfloat16"])


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
