"""Grain input pipelines: sources, tokenization, packing, mixing and sharding (see pipeline.py)."""

from bitjax.data.pipeline import Pipeline, build_pipeline
from bitjax.errors import DataError
from bitjax.paths import cache_dir

__all__ = ["DataError", "Pipeline", "build_pipeline", "cache_dir"]
