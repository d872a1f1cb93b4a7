"""Frozen, typed configuration of a run, and the recipes that build one.

  TrainConfig             one run: model, data, distill, optim, checkpoint, mesh, loop settings (train.py)
  SourceConfig, DataConfig                what it trains on: sources, mixing, packing, batches (data.py)
  DistillConfig, OptimConfig, CheckpointConfig, MeshConfig, LogConfig   the other sections (train.py)
  ModelConfig             the network's shape and numerics (defined beside the network, bitjax.nn)
  load_recipe, apply_overrides, recipe_presets   a recipe file, `--set key=value`, `--preset` (recipes.py)
  to_dict, from_dict      configs to and from the JSON a run directory keeps

A recipe is a Python file whose `get_config()` returns a TrainConfig:

    from bitjax.config import DataConfig, ModelConfig, SourceConfig, TrainConfig
"""

from bitjax.config.data import CACHE_EXHAUSTED, CacheExhausted, DataConfig, SourceConfig
from bitjax.config.recipes import apply_overrides, from_dict, load_recipe, recipe_presets, to_dict
from bitjax.config.train import CheckpointConfig, DistillConfig, LogConfig, MeshConfig, OptimConfig, TrainConfig
from bitjax.nn.model_config import ModelConfig

__all__ = ["CACHE_EXHAUSTED", "CacheExhausted", "CheckpointConfig", "DataConfig", "DistillConfig", "LogConfig",
           "MeshConfig",
           "ModelConfig", "OptimConfig", "SourceConfig", "TrainConfig", "apply_overrides", "from_dict", "load_recipe",
           "recipe_presets", "to_dict"]
