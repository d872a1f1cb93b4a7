"""The accelerators' published figures (memory, peak FLOP/s, HBM and interconnect bandwidth) and TPU slices.

fit-check prices a compiled step with them (its three roofline terms); `bitjax bench` divides measured FLOP/s by
a device's peak. Sources, per chip:
  TPU   Cloud TPU system-architecture pages (v4, v5e, v5p, v6e): HBM, bf16 and int8 peaks, HBM bandwidth;
        ICI per link and direction from "How to Scale Your Model" (jax-ml/scaling-book, TPU chapter): v4 45,
        v5e 50, v5p 100, v6e 100 GB/s; v4 and v5p have 6 links a chip (3D torus), v5e and v6e 4 (2D).
        v5p's int8 peak is taken as its bf16 peak (459): its Cloud page lists bf16 and fp8 at 459 and no int8
        figure (the launch material and the scaling book quote 918 TOPS; were that the rate, ternary steps on
        v5p would be cheaper than estimated here). v4's int8 peak equals its bf16 peak (275).
  GPU   NVIDIA data sheets, dense (no 2:4 sparsity): H100 SXM 989 TFLOP/s bf16, 1979 TOPS int8, 3.35 TB/s
        HBM3, NVLink 4 at 900 GB/s both directions (450 GB/s each way, through NVSwitch to any GPU of the
        node), InfiniBand NDR 400 Gb/s per GPU between nodes (50 GB/s each way); H200 the same compute with
        141 GB at 4.8 TB/s; H100 PCIe 756 / 1513 at 2.0 TB/s; A100 312 / 624.
"""

from __future__ import annotations

import dataclasses
import importlib.util

from bitjax.errors import ConfigError

GIB = 1024**3


@dataclasses.dataclass(frozen=True)
class Chip:
    """One accelerator's figures: memory, peaks, HBM bandwidth and its interconnect links."""

    kind: str
    hbm_bytes: int
    peak_bf16_flops: float     # per chip, per second, dense
    peak_int8_ops: float       # int8 x int8 -> int32 matmuls, per second
    hbm_bytes_per_s: float
    link_bytes_per_s: float    # one interconnect link, one direction (GPU: NVLink per GPU, one direction)
    links: int = 1             # interconnect links per chip (TPU: ICI ports)
    megacore: bool = False     # two TensorCores presented as one JAX device
    scale_out_bytes_per_s: float = 0.0   # GPU: InfiniBand per GPU, one direction (between nodes)


# TPU HBM is what the TPU compiler reports as available to a program (a little under the nominal 32 / 16 / 95 /
# 32 GB).
CHIPS = {
    "v4": Chip("v4", int(30.75 * GIB), 275e12, 275e12, 1.2e12, 45e9, links=6, megacore=True),
    "v5e": Chip("v5e", int(15.75 * GIB), 197e12, 394e12, 8.19e11, 50e9, links=4),
    "v5p": Chip("v5p", int(95.74 * GIB), 459e12, 459e12, 2.765e12, 100e9, links=6, megacore=True),
    "v6e": Chip("v6e", int(31.25 * GIB), 918e12, 1836e12, 1.64e12, 100e9, links=4),
}

GPUS = {
    "h100": Chip("H100 SXM", 80 * 10**9, 989e12, 1979e12, 3.35e12, 450e9, scale_out_bytes_per_s=50e9),
    "h200": Chip("H200 SXM", 141 * 10**9, 989e12, 1979e12, 4.8e12, 450e9, scale_out_bytes_per_s=50e9),
    "h100-pcie": Chip("H100 PCIe", 80 * 10**9, 756e12, 1513e12, 2.0e12, 300e9, scale_out_bytes_per_s=50e9),
    "a100": Chip("A100 SXM", 80 * 10**9, 312e12, 624e12, 2.039e12, 300e9, scale_out_bytes_per_s=25e9),
}

# `jax.devices()[0].device_kind` -> figures; the first key the device kind contains wins (longest first).
DEVICE_KINDS = (
    ("TPU v6 lite", CHIPS["v6e"]), ("TPU v6e", CHIPS["v6e"]), ("TPU v5 lite", CHIPS["v5e"]),
    ("TPU v5e", CHIPS["v5e"]), ("TPU v5p", CHIPS["v5p"]), ("TPU v5", CHIPS["v5p"]), ("TPU v4", CHIPS["v4"]),
    ("H100 PCIe", GPUS["h100-pcie"]), ("GH200", GPUS["h100"]), ("H200", GPUS["h200"]), ("H100", GPUS["h100"]),
    ("A100", GPUS["a100"]),
)


def chip_for_device(device_kind: str) -> Chip | None:
    """The figures of a JAX device kind ("TPU v5 lite", "NVIDIA H100 80GB HBM3"); None when unknown (CPUs)."""
    return next((chip for key, chip in DEVICE_KINDS if key.lower() in device_kind.lower()), None)


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

    @property
    def grid(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.topology_name.split(":")[1].split("x"))

    @property
    def interconnect_bytes_per_s(self) -> float:
        """What one chip receives per second in a collective over the whole slice: every grid axis longer
        than 1 brings two links, each one way, and a ring that closes (a wraparound link) uses both
        directions; an open axis, half. Wraparound: v4/v5p axes that are multiples of 4, v5e/v6e axes of 16
        (the scaling book's TPU chapter). A collective over part of the slice uses fewer links: slower."""
        wraps = (lambda n: n % 4 == 0) if self.chip.links == 6 else (lambda n: n == 16)
        per_axis = [2 if wraps(n) else 1 for n in self.grid if n > 1]
        return self.chip.link_bytes_per_s * max(sum(per_axis), 1)


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
