"""`bitjax fit-check`: topology names, bad input, and real ahead-of-time TPU compiles (needs libtpu)."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from benchmarks import fit_check_table
from bitjax import cli
from bitjax.fit_check import check as fit_check
from tests.support import ROOT

R125 = str(ROOT / "recipes" / "bitnet_125m.py")
HAVE_LIBTPU = importlib.util.find_spec("libtpu") is not None
needs_libtpu = pytest.mark.skipif(not HAVE_LIBTPU, reason="libtpu is not installed (pip install '.[tpu]')")


def test_user_names_map_to_libtpu_topologies():
    assert fit_check.topology("v4-8").topology_name == "v4:2x2x1"     # v4 names count TensorCores
    assert fit_check.topology("v4-8").n_chips == 4
    assert fit_check.topology("v5p-64").topology_name == "v5p:2x4x4"
    assert fit_check.topology("v5e-16").topology_name == "v5e:4x4"    # v5e names count chips
    assert fit_check.topology("v6e-8").topology_name == "v6e:2x4"


def test_unknown_topology_is_one_line_error(capsys):
    assert cli.main(["fit-check", R125, "--topology", "v9-8"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("bitjax: error: unknown TPU topology 'v9-8'; known: v4-8, ") and "v5e-16" in err
    assert "\n" not in err


def test_unknown_preset_is_one_line_error(capsys):
    assert cli.main(["fit-check", R125, "--topology", "v5e-16", "--preset", "tpu-9000"]) == 2
    err = capsys.readouterr().err.strip()
    assert "no launch preset 'tpu-9000'; known presets: cpu, v4-8, v5e-16" in err and "\n" not in err


@pytest.mark.skipif(HAVE_LIBTPU, reason="libtpu is installed")
def test_missing_libtpu_is_one_line_error(capsys):
    assert cli.main(["fit-check", R125, "--topology", "v5e-16", "--set", "model.n_layers=2"]) == 2
    assert "pip install 'bitjax[tpu]'" in capsys.readouterr().err


def _fit_check(*args):
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=os.pathsep.join([str(ROOT)] + sys.path))
    return subprocess.run([sys.executable, "-m", "bitjax.cli", "fit-check", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1800)


@pytest.mark.slow   # about 3 minutes; CI runs this file's slow lane (.ci/run), the default suite does not
@needs_libtpu
def test_fits_on_its_slice_and_not_on_one_chip():
    """The 125m recipe cut to 2 layers (to compile in about a minute here) fits its v5e-16 preset; 512 rows on
    a single v5e chip do not, and the report says by how much."""
    fits = _fit_check(R125, "--topology", "v5e-16", "--set", "model.n_layers=2")
    assert fits.returncode == 0, fits.stderr[-3000:]
    assert "preset v5e-16" in fits.stdout and "16 v5e chips" in fits.stdout
    for field in ("arguments", "temporaries", "total", "roofline terms per step:", "collectives per step", "binds",
                  "estimated step time", "MFU", "compiled in", "compiled step: L x L score arrays", "FITS:"):
        assert field in fits.stdout, field

    # 512 rows of 2048 tokens on one chip (the preset's 64 rows fit one v5e chip now: ~0.2 GiB a row)
    too_big = _fit_check(R125, "--topology", "v5e-1", "--set", "model.n_layers=2", "--set", "data.batch_size=512")
    assert too_big.returncode == 1, too_big.stderr[-3000:]
    assert "DOES NOT FIT: needs" in too_big.stdout and "more than the 15.75 GiB available" in too_big.stdout


TINY = str(ROOT / "recipes" / "tiny.py")


@needs_libtpu
def test_hlo_dir_holds_the_compiled_step_and_its_buffer_assignment(tmp_path):
    out = _fit_check(TINY, "--topology", "v5e-4", "--set", "model.n_layers=1", "--hlo", str(tmp_path))
    assert out.returncode == 0, out.stderr[-3000:]
    names = [p.name for p in tmp_path.iterdir()]
    step = [n for n in names if "train_step" in n]
    assert any(n.endswith("after_optimizations.txt") for n in step), names
    assert any(n.endswith("buffer-assignment.txt") for n in step), names
    assert any(n.endswith("memory-usage-report.txt") for n in step), names


@needs_libtpu
def test_sweep_prints_one_row_per_value_and_memory_grows_with_depth():
    out = _fit_check(TINY, "--topology", "v5e-4", "--sweep", "model.n_layers=1,3")
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [line.split() for line in out.stdout.splitlines() if line.strip().split(" ")[0] in ("1", "3")]
    assert [r[0] for r in rows] == ["1", "3"], out.stdout
    arguments = [float(r[1]) for r in rows]      # GiB of state: three layers hold more parameters than one
    assert arguments[1] > arguments[0]


def test_bad_sweep_is_one_line_error(capsys):
    assert cli.main(["fit-check", TINY, "--topology", "v5e-4", "--sweep", "model.n_layers"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--sweep 'model.n_layers'; write KEY=V1,V2,..." in err and "\n" not in err


@needs_libtpu
@pytest.mark.slow
@pytest.mark.parametrize("recipe, topology", [
    ("bitnet_125m", "v5e-16"), ("bitnet_700m", "v5p-64"), ("bitnet_2b4t", "v5p-64")])
def test_every_recipe_fits_its_stated_topology_with_its_recorded_memory(recipe, topology, tmp_path):
    """Each recipe compiled for its slice fits, and its per-chip memory is within 10% of the figure fit-check
    recorded for the docs (benchmarks/results/fit_check.jsonl): a change that grows the step shows here."""
    out = _fit_check(str(ROOT / "recipes" / f"{recipe}.py"), "--topology", topology, "--json", str(tmp_path / "r"))
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    assert "FITS:" in out.stdout
    (now,) = [json.loads(line) for line in (tmp_path / "r").read_text().splitlines()]
    was = fit_check_table.recorded(recipe, topology)
    assert now["total_gib"] == pytest.approx(was["total_gib"], rel=0.10), (now["total_gib"], was["total_gib"])
    assert now["temp_gib"] == pytest.approx(was["temp_gib"], rel=0.10, abs=0.05)
    for term in ("compute", "HBM", "collectives"):
        assert term in out.stdout
