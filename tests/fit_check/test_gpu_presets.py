"""The H100 launch presets, checked by arithmetic (no GPU was available to compile or run them).

Per GPU: the mesh uses exactly the GPUs the preset names, the global batch splits evenly over them, and the
memory fits in 80 GB with a tenth to spare by this model of a step:
  state        parameters x 16 bytes (float32 latent weights, AdamW's two moments, float32 gradients) / fsdp
  activations  rows per GPU x the temporaries per row the TPU compiler reports for the same recipe's TPU
               preset: read from fit-check's recorded output (benchmarks/results/fit_check.jsonl, written by
               `bitjax fit-check --json`; the slow lane checks it against a fresh compile). They include that
               preset's gradient shards, so the figure is an overestimate
"""

import math

import pytest

from benchmarks import fit_check_table
from bitjax.config import load_recipe, recipe_presets
from bitjax.nn.transformer import count_params
from tests.support import ROOT

H100_BYTES = 80e9
GIB = 2**30

# the TPU preset whose compiled temporaries size each recipe's GPU presets
TPU_PRESET = {"bitnet_125m": "v5e-16", "bitnet_700m": "v5p-64", "bitnet_2b4t": "v5p-64"}


def _gpus(preset: str) -> int:
    return int(preset.removeprefix("h100x"))


@pytest.mark.parametrize("recipe", list(TPU_PRESET))
@pytest.mark.parametrize("preset", ["h100x1", "h100x8"])
def test_h100_preset_fits_by_arithmetic(recipe, preset):
    path = ROOT / "recipes" / f"{recipe}.py"
    assert preset in recipe_presets(path)
    cfg = load_recipe(path, preset)
    gpus = _gpus(preset)
    mesh = cfg.mesh
    sizes = [mesh.data, mesh.fsdp, mesh.tensor]
    fixed = math.prod(s for s in sizes if s != -1)
    assert gpus % fixed == 0 and (sizes.count(-1) == 1 or fixed == gpus), (preset, sizes)
    batch_split = gpus // max(mesh.tensor, 1)
    assert cfg.data.batch_size % batch_split == 0
    rows_per_gpu = cfg.data.batch_size // batch_split
    fsdp = mesh.fsdp if mesh.fsdp != -1 else gpus // (mesh.data * mesh.tensor)

    fit = fit_check_table.recorded(recipe, TPU_PRESET[recipe])
    temps_gib, tpu_rows = fit["temp_gib"], fit["rows_per_chip"]
    state = count_params(cfg.model)["total"] * 16 / fsdp
    activations = rows_per_gpu * temps_gib * GIB / tpu_rows
    assert state + activations < 0.9 * H100_BYTES, (state / 1e9, activations / 1e9)
