"""fit-check's roofline: the chips' figures, the interconnect a slice gives one chip, and the three terms of a
compiled step (compute at the int8 and bf16 peaks, HBM, collectives), which binds, and the MFU it implies."""

import pytest

from bitjax.fit_check import collectives, flops, hardware
from bitjax.fit_check.report import FitReport, render_comparison, render_sweep
from bitjax.nn.model_config import ModelConfig


@pytest.mark.parametrize("name, grid, per_chip", [
    ("v5e-16", (4, 4), 2 * 50e9),            # two open axes: one link each way
    ("v5e-256", (16, 16), 4 * 50e9),         # full 16-chip axes close into rings: both directions
    ("v6e-64", (8, 8), 2 * 100e9),
    ("v5p-64", (2, 4, 4), 100e9 + 4 * 100e9),  # the 2-chip axis open, the 4-chip axes rings
    ("v4-8", (2, 2, 1), 2 * 45e9),
])
def test_the_interconnect_one_chip_receives_from(name, grid, per_chip):
    topo = hardware.topology(name)
    assert topo.grid == grid and topo.interconnect_bytes_per_s == per_chip


def test_device_kinds_find_their_figures():
    assert hardware.chip_for_device("TPU v5 lite").kind == "v5e"
    assert hardware.chip_for_device("TPU v6 lite").kind == "v6e"
    assert hardware.chip_for_device("TPU v5").kind == "v5p"
    assert hardware.chip_for_device("NVIDIA H100 80GB HBM3").peak_bf16_flops == 989e12
    assert hardware.chip_for_device("NVIDIA H100 PCIe").kind == "H100 PCIe"
    assert hardware.chip_for_device("NVIDIA H200").hbm_bytes == 141 * 10**9
    assert hardware.chip_for_device("cpu") is None
    for chip in (*hardware.CHIPS.values(), *hardware.GPUS.values()):
        assert chip.peak_int8_ops >= chip.peak_bf16_flops


def test_int8_flops_are_the_bitlinear_forwards_and_their_recompute():
    model = ModelConfig.bitnet_125m(int8_matmul=True, remat="full")
    blocks = flops.matmul_params(model) - 49152 * 768
    assert flops.int8_flops(model, 4, 2048) == 2 * blocks * 4 * 2048 * 2      # forward + the recompute
    assert flops.int8_flops(ModelConfig.bitnet_125m(int8_matmul=True, remat="dots_saveable"), 4, 2048) == \
        2 * blocks * 4 * 2048
    assert flops.int8_flops(ModelConfig.bitnet_125m(int8_matmul=False), 4, 2048) == 0
    assert flops.int8_flops(ModelConfig.bitnet_125m(int8_matmul=True, quant="none"), 4, 2048) == 0


def _report(**kw):
    topo = hardware.topology("v5e-16")      # 197 TFLOP/s bf16, 394 TOP/s int8, 819 GB/s, 100 GB/s ICI
    base = dict(recipe="r", topology=topo, mesh={"data": 1, "fsdp": 16, "tensor": 1}, global_batch=64,
                seq_len=2048, model_flops=16 * 197e12 * 0.010, hardware_flops=16 * 197e12 * 0.012,
                bytes_accessed_per_device=819e9 * 0.008, argument_bytes=2**30, temp_bytes=2**30)
    return FitReport(**(base | kw))


def _traffic(wire_bytes):   # one all-gather over 16 devices sending `wire_bytes`
    return collectives.Traffic((collectives.Collective("all-gather", "u8", wire_bytes * 16 / 15, 16, 1),))


def test_three_terms_the_largest_binds_and_sets_the_mfu():
    r = _report(traffic=_traffic(100e9 * 0.004))
    assert r.compute_seconds == pytest.approx(0.012) and r.hbm_seconds == pytest.approx(0.008)
    assert r.collective_seconds == pytest.approx(0.004)
    assert r.bound == "compute" and r.step_seconds == pytest.approx(0.012)
    assert r.mfu == pytest.approx(0.010 / 0.012)
    assert r.serial_seconds == pytest.approx(0.016)       # nothing overlapping the collectives
    slow_links = _report(traffic=_traffic(100e9 * 0.030))
    assert slow_links.bound == "collectives" and slow_links.mfu == pytest.approx(0.010 / 0.030)


def test_int8_matmuls_are_priced_at_the_int8_peak_in_the_step_and_in_the_mfu():
    r = _report(int8_flops=16 * 197e12 * 0.006,          # half of the 12 ms of work runs at twice the rate
                model_int8_flops=16 * 197e12 * 0.004, traffic=_traffic(0.0))
    assert r.compute_seconds == pytest.approx(0.006 + 0.003) and r.bound == "compute"
    # the model's 10 ms of bf16-rate work: 4 ms of it int8, done in 2 ms at peak, so 8 ms at the peaks of 9
    assert r.mfu == pytest.approx(0.008 / 0.009)
    assert hardware.CHIPS["v5e"].peak_int8_ops == 2 * hardware.CHIPS["v5e"].peak_bf16_flops
    assert hardware.CHIPS["v5p"].peak_int8_ops == hardware.CHIPS["v5p"].peak_bf16_flops   # no int8 figure


def test_the_report_names_every_term_and_the_overlap_assumption():
    r = _report(traffic=_traffic(1e9))
    text = r.render()
    for part in ("compute", "HBM", "collectives", "binds", "no overlap of collectives", "all-gather u8",
                 "MFU", "FITS"):
        assert part in text, part
    assert r.summary()["collectives_gb"]["all-gather u8"]["wire"] == pytest.approx(1.0)
    assert "collect." in render_sweep("data.batch_size", [("64", r)])
    dense = _report(hardware_flops=16 * 197e12 * 0.015)
    assert "0.80x the dense bf16 step's" in render_comparison(r, dense)
