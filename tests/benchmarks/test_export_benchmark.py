"""benchmarks/export.py --smoke: the export benchmark runs end to end at tiny shapes (so it cannot rot)."""

import os
import subprocess
import sys

from tests.support import ROOT


def test_export_benchmark_smoke():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, "-m", "benchmarks.export", "--smoke"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "planned sizes equal written sizes for 15 tiny files" in result.stderr
    out = result.stdout
    assert "| tiny | tq1_0 |" in out and "Q6_K embedding" in out
    for label in ("| F16 |", "| TQ2_0 + F16 emb |", "| TQ2_0 + Q6_K emb |", "| TQ1_0 + Q6_K emb |"):
        assert label in out
    assert "bandwidth-bound fraction" in out and "TQ2_0 + Q6_K emb / F16 decode speed:" in out
