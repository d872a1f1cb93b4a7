"""recipes/tiny.py with its text sources distilled from a teacher cache (objective "kd"), for the tests.

The cache directory is set by each test with `--set distill.cache=...`.
"""

import dataclasses
import importlib.util
from pathlib import Path

from bitjax.config import TrainConfig

_TINY = Path(__file__).resolve().parents[3] / "recipes" / "tiny.py"


def get_config() -> TrainConfig:
    spec = importlib.util.spec_from_file_location("tiny_recipe", _TINY)
    tiny = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tiny)
    cfg = tiny.get_config()
    sources = tuple(dataclasses.replace(s, objective="kd") for s in cfg.data.sources)
    return dataclasses.replace(cfg, name="kd_tiny", data=dataclasses.replace(cfg.data, sources=sources),
                               distill=dataclasses.replace(cfg.distill, cache="caches/kd_tiny", k=8))
