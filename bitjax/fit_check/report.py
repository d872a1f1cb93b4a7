"""What fit-check reports of one compiled step: its memory (the compiler's, a fact) and a three-term roofline
(an estimate), rendered as text, as a sweep table, as a ternary-against-dense comparison, or as JSON.

The roofline terms, per chip and step:
  compute       hardware FLOPs (bitjax.fit_check.flops) at the chip's peaks: int8 x int8 matmuls at the int8
                peak, everything else at the bf16 peak
  HBM           the compiler's bytes accessed (unrolled compiles, see check.unrolled_cost) at the HBM bandwidth
  collectives   the bytes the compiled step's collectives send per device (bitjax.fit_check.collectives) at
                what the slice's interconnect delivers to one chip (hardware.Topology.interconnect_bytes_per_s)
Overlap assumption: the three overlap completely (XLA issues the collectives asynchronously and its scheduler
hides them behind the matmuls; the HBM traffic is the matmuls' own), so the step estimate is the largest
term, the one that binds, and MFU follows from it (model FLOPs at their peaks over the step: int8 matmuls at the
int8 peak, the rest at bf16's; FitReport.mfu_at). Without any overlap the
step would take max(compute, HBM) + collectives: printed as well, the pessimistic end.
"""

from __future__ import annotations

import dataclasses

from bitjax.fit_check import collectives, hlo_facts
from bitjax.fit_check.hardware import GIB, Topology


@dataclasses.dataclass(frozen=True)
class FitReport:
    """Per-device figures of the compiled step; when the TPU compiler refused it for lack of HBM, only
    its requirement (`oom`) is known."""

    recipe: str
    topology: Topology
    mesh: dict[str, int]
    global_batch: int
    seq_len: int
    model_flops: float                 # 6 N T + causal attention, whole step, all devices (the MFU numerator)
    hardware_flops: float              # model FLOPs + rematerialisation's recompute, all devices
    int8_flops: float = 0.0            # the part of hardware_flops run as int8 x int8 matmuls
    model_int8_flops: float = 0.0      # the part of model_flops that is (the forward's BitLinear matmuls)
    quant: str = "ternary"             # the model's quant setting ("none": the dense network)
    lower_seconds: float = 0.0         # wall time to trace and lower the step
    compile_seconds: float = 0.0       # wall time of the TPU compiler on this machine
    argument_bytes: int = 0            # state + batch (donated state buffers are reused by the outputs)
    output_bytes: int = 0
    alias_bytes: int = 0               # outputs written in place of donated arguments
    temp_bytes: int = 0                # activations kept for the backward pass, gradients, scratch
    code_bytes: int = 0
    compiled_flops_per_device: float = 0.0   # the compiler's count (see bitjax.fit_check.flops for what it misses)
    bytes_accessed_per_device: float = 0.0
    traffic: collectives.Traffic | None = None
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
        """One device's hardware FLOPs: int8 matmuls at the int8 peak, the rest at the bf16 peak."""
        chip, n = self.topology.chip, self.topology.n_chips
        return ((self.hardware_flops - self.int8_flops) / chip.peak_bf16_flops
                + self.int8_flops / chip.peak_int8_ops) / n

    @property
    def hbm_seconds(self) -> float:
        """The compiler's bytes accessed by one device at the chip's HBM bandwidth."""
        return self.bytes_accessed_per_device / self.topology.chip.hbm_bytes_per_s

    @property
    def collective_seconds(self) -> float:
        """The bytes one device sends in collectives at what the slice's interconnect delivers to a chip."""
        wire = self.traffic.wire_bytes if self.traffic is not None else 0.0
        return wire / self.topology.interconnect_bytes_per_s

    @property
    def terms(self) -> dict[str, float]:
        return {"compute": self.compute_seconds, "HBM": self.hbm_seconds, "collectives": self.collective_seconds}

    @property
    def bound(self) -> str:
        """The term that binds: the largest."""
        return max(self.terms.items(), key=lambda kv: kv[1])[0]

    @property
    def step_seconds(self) -> float:
        """Roofline estimate with full overlap: the largest term."""
        return max(self.terms.values())

    @property
    def serial_seconds(self) -> float:
        """The step if collectives overlapped nothing: max(compute, HBM) + collectives."""
        return max(self.compute_seconds, self.hbm_seconds) + self.collective_seconds

    def mfu_at(self, seconds: float) -> float:
        """Model FLOPs utilisation: the time the model's FLOPs take at the chip's peaks over `seconds`. Its int8
        matmuls count at the int8 peak (a ternary step cannot pass 100% by running them faster than bf16);
        for a network without them this is the usual model FLOPs / (chips x bf16 peak x step)."""
        chip, n = self.topology.chip, self.topology.n_chips
        at_peak = ((self.model_flops - self.model_int8_flops) / chip.peak_bf16_flops
                   + self.model_int8_flops / chip.peak_int8_ops) / n
        return at_peak / seconds

    @property
    def mfu(self) -> float:
        return self.mfu_at(self.step_seconds)

    def render(self) -> str:
        chip = self.topology.chip
        mesh = " x ".join(f"{a}={s}" for a, s in self.mesh.items())
        tokens = self.global_batch * self.seq_len
        lines = [
            f"fit-check {self.recipe} on {self.topology.name} ({self.topology.n_chips} {chip.kind} chips, "
            f"topology {self.topology.topology_name}, {_gib(chip.hbm_bytes)} HBM per chip)",
            f"  mesh {mesh}; global batch {self.global_batch} x {self.seq_len} = {tokens:,} tokens/step; "
            f"{self.model_flops:.3e} model FLOPs/step ({self.hardware_flops:.3e} with recompute; int8 "
            f"{self.model_int8_flops:.3e} and {self.int8_flops:.3e})",
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
                f"  collectives per step and device (compiled, loops counted by their trip counts): "
                f"{self.traffic.describe() if self.traffic else 'not read'}",
                "  roofline terms per step:",
                f"    compute      {self.compute_seconds * 1e3:8.1f} ms   analytic FLOPs at "
                f"{chip.peak_bf16_flops / 1e12:.0f} TFLOP/s bf16, {chip.peak_int8_ops / 1e12:.0f} TOP/s int8",
                f"    HBM          {self.hbm_seconds * 1e3:8.1f} ms   compiled "
                f"{self.bytes_accessed_per_device / 1e9:.1f} GB at {chip.hbm_bytes_per_s / 1e9:.0f} GB/s",
                f"    collectives  {self.collective_seconds * 1e3:8.1f} ms   "
                f"{(self.traffic.wire_bytes if self.traffic else 0) / 1e9:.2f} GB sent at "
                f"{self.topology.interconnect_bytes_per_s / 1e9:.0f} GB/s (ICI into one chip)",
                f"    {self.bound} binds (the terms assumed to overlap; with no overlap of collectives "
                f"{self.serial_seconds * 1e3:.1f} ms, MFU {self.mfu_at(self.serial_seconds):.0%})",
                f"  estimated step time {self.step_seconds * 1e3:.1f} ms: {tokens / self.step_seconds:,.0f} tokens/s, "
                f"MFU {self.mfu:.0%} at that bound (an estimate; memory above is the compiler's)",
                f"  compiler's own FLOP count {self.compiled_flops_per_device:.3e} per device, extrapolated from "
                f"unrolled depths 1 and 2 (analytic {self.hardware_flops / self.topology.n_chips:.3e}; Pallas "
                "kernels count as nothing, int8 like bf16)",
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

    def summary(self) -> dict:
        """The figures as one JSON-ready dict (`bitjax fit-check --json`; tests and docs read it)."""
        out = {"recipe": self.recipe, "topology": self.topology.name, "quant": self.quant, "mesh": self.mesh,
               "global_batch": self.global_batch, "seq_len": self.seq_len, "fits": self.fits,
               "total_gib": self.total_bytes / GIB, "oom": self.oom}
        if self.oom:
            return out
        traffic = self.traffic.by_kind() if self.traffic else {}
        return out | {
            "argument_gib": self.argument_bytes / GIB, "temp_gib": self.temp_bytes / GIB,
            "rows_per_chip": self.global_batch / (self.mesh.get("data", 1) * self.mesh.get("fsdp", 1)),
            "compute_ms": self.compute_seconds * 1e3, "hbm_ms": self.hbm_seconds * 1e3,
            "collective_ms": self.collective_seconds * 1e3, "bound": self.bound,
            "step_ms": self.step_seconds * 1e3, "mfu": self.mfu, "serial_ms": self.serial_seconds * 1e3,
            "collectives_gb": {f"{kind} {dtype}": {"array": array / 1e9, "wire": wire / 1e9}
                               for (kind, dtype), (array, wire) in traffic.items()},
            # the facts the terms are priced from, so a line can be priced again with other figures
            "model_flops": self.model_flops, "hardware_flops": self.hardware_flops, "int8_flops": self.int8_flops,
            "model_int8_flops": self.model_int8_flops, "bytes_accessed_per_device": self.bytes_accessed_per_device,
            "collective_wire_bytes": self.traffic.wire_bytes if self.traffic else 0.0,
            "interconnect_bytes_per_s": self.topology.interconnect_bytes_per_s,
            "compile_seconds": self.compile_seconds,
        }


def _gib(n: int) -> str:
    return f"{n / GIB:.2f} GiB"


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f}"


def render_sweep(key: str, rows: list[tuple[str, FitReport]]) -> str:
    """One line per value: memory, the three terms, which binds, the step estimate and its MFU."""
    lines = [f"{key:>20} {'arguments':>11} {'temporaries':>12} {'total':>11} {'compute':>8} {'HBM':>8} "
             f"{'collect.':>8} {'binds':>11} {'est. step':>10} {'MFU':>5} {'compile':>8}"]
    for value, r in rows:
        if r.oom:
            lines.append(f"{value:>20} {'':>11} {'':>12} {_gib(r.total_bytes):>11}  out of HBM")
            continue
        lines.append(f"{value:>20} {_gib(r.argument_bytes):>11} {_gib(r.temp_bytes):>12} {_gib(r.total_bytes):>11} "
                     f"{_ms(r.compute_seconds):>8} {_ms(r.hbm_seconds):>8} {_ms(r.collective_seconds):>8} "
                     f"{r.bound:>11} {_ms(r.step_seconds):>7} ms {r.mfu:>5.0%} {r.compile_seconds:>6.1f} s")
    return "\n".join(lines)


def render_comparison(ternary: FitReport, dense: FitReport) -> str:
    """The recipe's ternary step next to the same recipe with quant="none" in bf16: terms in ms, and the ratio."""
    def row(name, a, b, fmt=_ms):
        ratio = f"{a / b:.2f}x" if isinstance(a, float) and b else ""
        return f"  {name:<24} {fmt(a):>12} {fmt(b):>12} {ratio:>8}"
    if ternary.oom or dense.oom:
        return "  (a step that does not compile cannot be compared)"
    lines = [f"ternary against dense bf16 (quant=none), {ternary.topology.name}, per chip and step:",
             f"  {'':<24} {'ternary':>12} {'dense bf16':>12} {'ratio':>8}",
             row("memory (GiB)", ternary.total_bytes / GIB, dense.total_bytes / GIB, lambda x: f"{x:.2f}"),
             row("compute (ms)", ternary.compute_seconds, dense.compute_seconds),
             row("HBM (ms)", ternary.hbm_seconds, dense.hbm_seconds),
             row("collectives (ms)", ternary.collective_seconds, dense.collective_seconds),
             row("step estimate (ms)", ternary.step_seconds, dense.step_seconds),
             f"  {'binds':<24} {ternary.bound:>12} {dense.bound:>12}",
             f"  {'MFU bound':<24} {ternary.mfu:>12.0%} {dense.mfu:>12.0%}",
             f"  the ternary step's estimate is {ternary.step_seconds / dense.step_seconds:.2f}x the dense bf16 "
             "step's (an estimate from the compiled programs, not a measurement)"]
    return "\n".join(lines)
