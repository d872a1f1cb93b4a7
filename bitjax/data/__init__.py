"""Grain input pipelines: sources, tokenization, packing, mixing and sharding (see pipeline.py)."""

from bitjax.data.pipeline import Pipeline, build_pipeline
from bitjax.data.sources import DataError, cache_dir

__all__ = ["DataError", "Pipeline", "build_pipeline", "cache_dir"]
