"""bitnet_700m with a SiLU-gated FFN: the 700M student that every llama.cpp `bitnet` build runs.

Same shape, data (and the commented `parquet:` FineWeb-Edu source to stream instead), teacher cache,
optimizer and launch presets as recipes/bitnet_700m.py; only `model.ffn_activation` differs. bitnet_700m
keeps relu2 (BitNet b1.58 2B4T's FFN), which llama.cpp's `bitnet` graph does not compute: train this
variant when the student is meant to ship as GGUF.

    bitjax train recipes/bitnet_700m_silu.py --preset v5p-64
    bitjax export runs/bitnet_700m_silu student.gguf --format gguf
"""

import dataclasses
from pathlib import Path

from bitjax.config import TrainConfig, load_recipe, recipe_presets

BASE = Path(__file__).resolve().with_name("bitnet_700m.py")
PRESETS = recipe_presets(BASE)


def get_config() -> TrainConfig:
    base = load_recipe(BASE)
    return dataclasses.replace(base, name="bitnet_700m_silu",
                               model=dataclasses.replace(base.model, ffn_activation="silu"))
