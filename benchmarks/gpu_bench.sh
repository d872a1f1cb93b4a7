#!/usr/bin/env bash
# `bitjax bench` on one NVIDIA GPU (an H100 or H200): the 125m recipe and the 700m shape, each ternary against
# the same network dense in bf16, alternating rounds. Prepared for whoever has a GPU: bitjax's own figures
# were never measured on one (docs/benchmarks.md).
#
#   pip install -e '.[test]' && pip install -U 'jax[cuda12]'      # a CUDA build of the same JAX version
#   benchmarks/gpu_bench.sh                                      # appends to benchmarks/results/gpu_bench.jsonl
#
# The step is the real one (the recipe's h100x1 preset: 16 x 2048 tokens for 125m, 8 x 2048 for 700m, on one
# device), on synthetic batches with the teacher's top-k fields; cuDNN attention, int8 x int8 BitLinear forwards.
# Each run prints a table (step time, tokens/s, MFU against the device's bf16 peak, memory) and one JSON line.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
OUT=${OUT:-benchmarks/results/gpu_bench.jsonl}
mkdir -p "$(dirname "$OUT")"
"$PYTHON" -c "import jax, sys; d = jax.devices()[0]; print(jax.__version__, d.platform, d.device_kind); \
sys.exit(0 if d.platform == 'gpu' else 'no GPU: JAX sees ' + d.platform)"
for recipe in bitnet_125m bitnet_700m; do
  "$PYTHON" -m bitjax.cli bench "recipes/$recipe.py" --preset h100x1 --compare-dense \
    --warmup 3 --rounds 5 --steps 10 --json "$OUT"
done
