"""Grain input pipelines: from sources to the mixed, packed, sharded batches the trainer reads.

  pipeline        build_pipeline / Pipeline: every source prepared, one tokenizer, the train and held-out streams
  pack, mix       Grain's packers (concat-then-split, first-fit) and weighted mixing with per-source counts
  shards          the global stream as a fixed number of data shards, read by any number of processes
  epoch_shuffle   a fresh permutation of a small source every pass
  schema          the one schema of a row and a batch
  coverage        how often a run reads each source, and what its teacher caches cost (`bitjax plan`)
  pretokenize     `bitjax tokenize`: a recipe's text sources as token directories
  sources/        where documents come from and how they become tokens (see its table of contents)
  teacher_files/  top-k caches and trace files: what the teachers write and the pipeline reads
"""

from bitjax.data.pipeline import Pipeline, build_pipeline
from bitjax.errors import DataError
from bitjax.paths import cache_dir

__all__ = ["DataError", "Pipeline", "build_pipeline", "cache_dir"]
