"""`bitjax bench` on this CPU: the smoke test CI runs. The real step runs, alternating with its dense bf16 twin,
and the JSON line carries what a run on other hardware is compared by. Its timings are not checked (numbers
belong to benchmarks): what is checked is that they are measured and reported consistently."""

import json

import pytest

from bitjax import cli
from bitjax.fit_check import bench, hardware
from tests.support import KD_TINY, TINY

SMALL = ["--set", "model.n_layers=1", "--set", "data.seq_len=32", "--set", "data.batch_size=2",
         "--steps", "1", "--rounds", "2", "--warmup", "1"]


@pytest.fixture(scope="module")
def bench_line(tmp_path_factory):
    """The tiny recipe distilling (teacher fields in the batch) against its dense twin, with a made-up peak."""
    path = tmp_path_factory.mktemp("bench") / "runs.jsonl"
    assert cli.main(["bench", KD_TINY, *SMALL, "--compare-dense", "--peak-tflops", "1", "--json", str(path)]) == 0
    lines = path.read_text().splitlines()
    assert len(lines) == 1
    return json.loads(lines[0])


def test_bench_times_the_step_and_its_dense_twin(bench_line):
    s = bench_line
    assert s["backend"] == "cpu" and s["devices"] >= 1 and s["peak_bf16_flops_per_device"] == 1e12
    ternary, dense = s["results"]
    assert (ternary["variant"], ternary["quant"], ternary["int8_matmul"]) == ("ternary", "ternary", True)
    assert (dense["variant"], dense["quant"], dense["dtype"]) == ("dense bf16", "none", "bfloat16")
    for r in (ternary, dense):
        assert r["rounds"] == 2 and r["step_ms_min"] <= r["step_ms"] <= r["step_ms_max"]
        assert r["tokens_per_s_per_device"] == pytest.approx(2 * 32 / (r["step_ms"] / 1e3) / s["devices"])
        assert r["compiled_step_gib"] > 0 and r["device_peak_gib"] is None   # CPUs report no peak bytes
        # MFU from the analytic FLOPs (the same for both: one network) against the given peak (for int8 too)
        assert r["mfu"] == pytest.approx(r["model_flops_per_step"] / (s["devices"] * 1e12 * r["step_ms"] / 1e3))
    assert ternary["model_int8_flops_per_step"] > 0 and dense["model_int8_flops_per_step"] == 0
    assert ternary["model_flops_per_step"] == dense["model_flops_per_step"]
    assert s["ratio"]["of"] == "ternary/dense bf16" and s["ratio"]["min"] <= s["ratio"]["median"] <= s["ratio"]["max"]


def test_without_a_peak_there_is_no_mfu_on_a_cpu(capsys):
    assert hardware.chip_for_device("cpu") is None
    assert "n/a" in bench.render({"recipe": "r", "devices": 1, "device_kind": "cpu", "backend": "cpu",
                                  "peak_bf16_flops_per_device": None, "results": [
                                      {"variant": "ternary", "step_ms": 1.0, "step_ms_min": 1.0, "step_ms_max": 1.0,
                                       "tokens_per_s_per_device": 1.0, "mfu": None, "compiled_step_gib": 0.1,
                                       "device_peak_gib": None, "rounds": 1}]})


def test_bad_counts_are_one_line_errors(capsys):
    assert cli.main(["bench", TINY, "--steps", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "bitjax: error: --steps=0; give a positive number"
