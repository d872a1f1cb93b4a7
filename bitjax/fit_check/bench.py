"""`bitjax bench`: the real train step, timed on the devices present (TPU, GPU or CPU): what fit-check estimates.

The recipe's Trainer builds its state and its one jitted step on all local devices (the recipe's mesh, as in
training), and runs it on a synthetic batch of the recipe's shapes (random tokens, every row from the first
source, the teacher's top-k fields when a source distils). After `warmup` steps (the first one compiles), it
runs `rounds` rounds of `steps` steps each, timed with one device sync per round; with a dense twin
(`quant="none"` in bf16, fit_check.check.dense_config) the two steps alternate round by round, so noise on
the machine hits both alike, and ratios are taken within each round. Figures are medians over rounds.

  tokens/s per device    global batch x L / step time / devices
  MFU                    the time the analytic model FLOPs (bitjax.fit_check.flops) take at the device's peaks
                         (int8 matmuls at the int8 peak, the rest at bf16's, as fit-check counts it) over the
                         measured step time x devices; the peaks come from bitjax.fit_check.hardware by device
                         kind (none for CPUs: no MFU there unless --peak-tflops gives one, used for both)
  memory                 the compiled step's own figure (arguments + outputs - donated + temporaries, the
                         compiler's memory analysis, on every backend), and the device's peak bytes in use where
                         the runtime reports it (GPU, TPU; process-wide: read after each variant's warm-up,
                         so the second one's includes the first)
"""

from __future__ import annotations

import dataclasses
import platform
import statistics
import time

import jax
import numpy as np

from bitjax import sharding as sharding_lib
from bitjax.config import TrainConfig
from bitjax.fit_check import flops, hardware
from bitjax.fit_check.check import dense_config
from bitjax.training.trainer import Trainer


def synthetic_batch(trainer: Trainer, teacher_k: int | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """This process's rows of a batch of the trainer's shapes: random tokens, one document per row, every row
    from source 0; with teacher fields, a peaked top-k over distinct ids leaving 0.1 nats of mass to the tail."""
    rng = np.random.default_rng(seed + jax.process_index())
    cfg = trainer.cfg
    # this process's rows of the global batch (Trainer.shard_batch assembles them, as in training)
    B, L, V = cfg.data.batch_size // jax.process_count(), cfg.data.seq_len, cfg.model.vocab_size
    tokens = rng.integers(0, V, size=(B, L + 1), dtype=np.int32)
    batch = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "segment_ids": np.ones((B, L), np.int32),
             "positions": np.broadcast_to(np.arange(L, dtype=np.int32), (B, L)).copy(),
             "loss_mask": np.ones((B, L), np.int32), "source_id": np.zeros((B,), np.int32)}
    shapes = {name: ((B, *shape[1:]), dtype) for name, (shape, dtype) in trainer.batch_shapes(teacher_k).items()}
    if "teacher_ids" in shapes:
        (_, _, k), id_dtype = shapes["teacher_ids"]
        ids = (rng.integers(0, V, size=(B, L, 1)) + np.arange(k)) % V   # k distinct ids per position
        logits = np.sort(rng.normal(size=(B, L, k)), axis=-1)[..., ::-1] * 2
        logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True)) - 0.1
        batch.update(teacher_ids=ids.astype(id_dtype), teacher_logprobs=logp.astype(shapes["teacher_logprobs"][1]),
                     teacher_tail=np.full((B, L), np.log(1 - np.exp(-0.1)), np.float32))
    assert set(batch) == set(shapes), (sorted(batch), sorted(shapes))
    return batch


@dataclasses.dataclass
class Variant:
    """One step under test: its name, trainer, jitted step, state and batch, and what was measured."""

    name: str
    trainer: Trainer
    step: object
    state: object
    batch: dict
    compile_seconds: float
    compiled_bytes: int | None
    times: list[float] = dataclasses.field(default_factory=list)
    peak_bytes: int | None = None

    def run(self, n: int) -> float:
        started = time.perf_counter()
        for _ in range(n):
            self.state, metrics = self.step(self.state, self.batch)
        jax.block_until_ready(metrics)
        return (time.perf_counter() - started) / n


def build(name: str, cfg: TrainConfig, warmup: int, teacher_k: int | None = None) -> Variant:
    """The recipe's state and jitted step on the local devices, compiled, then `warmup` steps run."""
    trainer = Trainer.create(cfg, load_teacher=cfg.distill.online)
    state = trainer.init_state()
    batch = trainer.shard_batch(synthetic_batch(trainer, teacher_k))
    started = time.perf_counter()
    step, compiled_bytes = trainer.jit_train_step(), None
    if trainer.teacher is None:   # compiled ahead, so the compiler's memory figure is the one of the step timed
        step = step.lower(state, batch).compile()
        memory = step.memory_analysis()
        compiled_bytes = None if memory is None else (
            memory.argument_size_in_bytes + memory.output_size_in_bytes - memory.alias_size_in_bytes
            + memory.temp_size_in_bytes)
    variant = Variant(name, trainer, step, state, batch, 0.0, compiled_bytes)
    variant.run(1)
    variant.compile_seconds = time.perf_counter() - started   # compile and the first step
    if warmup > 1:
        variant.run(warmup - 1)
    variant.peak_bytes = _device_peak_bytes()   # process-wide: it includes the variants built before
    return variant


def _device_peak_bytes() -> int | None:
    stats = jax.local_devices()[0].memory_stats()
    return int(stats["peak_bytes_in_use"]) if stats and "peak_bytes_in_use" in stats else None


def measure(variants: list[Variant], rounds: int, steps: int) -> list[list[float]]:
    """`rounds` rounds, each running every variant for `steps` steps in turn: per-round step times."""
    for _ in range(rounds):
        for v in variants:
            v.times.append(v.run(steps))
    return [v.times for v in variants]


def summary(recipe: str, variants: list[Variant], peak_flops: float | None = None) -> dict:
    """Everything measured, as one JSON-ready dict: the line `bitjax bench` writes."""
    device = jax.devices()[0]
    chip = hardware.chip_for_device(device.device_kind)
    peak = peak_flops or (chip.peak_bf16_flops if chip else None)
    peak_int8 = chip.peak_int8_ops if chip and not peak_flops else peak   # a given peak stands for both
    n = jax.device_count()
    out = {"recipe": recipe, "backend": jax.default_backend(), "device_kind": device.device_kind,
           "devices": n, "processes": jax.process_count(), "process_index": jax.process_index(),
           "peak_bf16_flops_per_device": peak, "jax": jax.__version__,
           "host": platform.node(), "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "results": []}
    for v in variants:
        cfg = v.trainer.cfg
        median = statistics.median(v.times)
        tokens = cfg.data.batch_size * cfg.data.seq_len
        model_flops = flops.step_flops(cfg.model, cfg.data.batch_size, cfg.data.seq_len)[0]
        model_int8 = flops.int8_flops(cfg.model, cfg.data.batch_size, cfg.data.seq_len, recompute=False)
        at_peak = (model_flops - model_int8) / peak + model_int8 / peak_int8 if peak else None
        out["results"].append({
            "variant": v.name, "quant": cfg.model.quant, "dtype": cfg.model.dtype,
            "int8_matmul": cfg.model.int8_matmul, "mesh": dict(v.trainer.mesh.shape),
            "batch": cfg.data.batch_size, "seq_len": cfg.data.seq_len, "rounds": len(v.times),
            "step_ms": median * 1e3, "step_ms_min": min(v.times) * 1e3, "step_ms_max": max(v.times) * 1e3,
            "tokens_per_s_per_device": tokens / median / n, "model_flops_per_step": model_flops,
            "model_int8_flops_per_step": model_int8, "mfu": at_peak / (n * median) if peak else None,
            "compile_s": v.compile_seconds,
            "compiled_step_gib": v.compiled_bytes / hardware.GIB if v.compiled_bytes is not None else None,
            "device_peak_gib": v.peak_bytes / hardware.GIB if v.peak_bytes is not None else None})
    if len(variants) == 2:
        ratios = [a / b for a, b in zip(variants[0].times, variants[1].times)]
        out["ratio"] = {"of": f"{variants[0].name}/{variants[1].name}", "median": statistics.median(ratios),
                        "min": min(ratios), "max": max(ratios)}
    return out


def render(s: dict) -> str:
    """The summary as the table `bitjax bench` prints."""
    peak = s["peak_bf16_flops_per_device"]
    lines = [f"bench {s['recipe']} on {s['devices']} x {s['device_kind']} ({s['backend']}; bf16 peak "
             + (f"{peak / 1e12:.0f} TFLOP/s per device)" if peak else "unknown: no MFU, give --peak-tflops)"),
             f"  {'variant':<12} {'step (median)':>14} {'min..max':>17} {'tokens/s/device':>16} {'MFU':>6} "
             f"{'compiled step':>14} {'device peak':>12}"]
    for r in s["results"]:
        mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a"
        gib = {k: f"{r[k]:.2f} GiB" if r[k] is not None else "n/a" for k in ("compiled_step_gib", "device_peak_gib")}
        lines.append(f"  {r['variant']:<12} {r['step_ms']:>11.1f} ms {r['step_ms_min']:>7.1f}..{r['step_ms_max']:<7.1f}"
                     f"ms {r['tokens_per_s_per_device']:>16,.0f} {mfu:>6} {gib['compiled_step_gib']:>14} "
                     f"{gib['device_peak_gib']:>12}")
    if "ratio" in s:
        r = s["ratio"]
        lines.append(f"  step time {r['of']}: median {r['median']:.3f} over {s['results'][0]['rounds']} alternating "
                     f"rounds (min {r['min']:.3f}, max {r['max']:.3f})")
    return "\n".join(lines)


def bench(cfg: TrainConfig, recipe: str, *, rounds: int, steps: int, warmup: int, compare_dense: bool,
          teacher_k: int | None = None, peak_flops: float | None = None) -> dict:
    """Build, warm up and time the recipe's step (and, with `compare_dense`, its dense bf16 twin), then summarise.
    On a multi-host slice every process runs this (joined as `bitjax train` joins them)."""
    sharding_lib.initialize_distributed(cfg.mesh)
    variants = [build(cfg.model.quant, cfg, warmup, teacher_k)]
    if compare_dense:
        variants.append(build("dense bf16", dense_config(cfg), warmup, teacher_k))
    measure(variants, rounds, steps)
    return summary(recipe, variants, peak_flops)
