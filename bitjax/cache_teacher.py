"""`bitjax cache-teacher`: run a teacher over a recipe's training examples and write a top-k cache."""

from __future__ import annotations

import itertools
from pathlib import Path

import jax
import numpy as np

from bitjax import data as data_lib
from bitjax.config import ConfigError, TrainConfig
from bitjax.teacher import open_teacher
from bitjax.topk_cache import CacheSpec, write_cache


def take_examples(cfg: TrainConfig, n: int) -> list[dict[str, np.ndarray]]:
    """The first `n` training examples of the recipe's pipeline (the same on every process)."""
    pipeline = data_lib.build_pipeline(cfg.data)
    rows = (
        {name: batch[name][b] for name in batch if name != "source_id"}
        for batch in pipeline.train_iterator(0, 1)
        for b in range(len(batch["inputs"]))
    )
    return list(itertools.islice(rows, n))


def cache_teacher(cfg: TrainConfig, teacher_spec: str, out: str | Path, *, k: int = 32, n_examples: int = 256,
                  num_shards: int = 4, logprob_dtype: str = "float16", progress: bool = True) -> dict:
    pipeline = data_lib.build_pipeline(cfg.data)
    teacher = open_teacher(teacher_spec)
    if teacher.vocab_size != pipeline.vocab_size:
        raise ConfigError(
            f"teacher {teacher.name} has a vocabulary of {teacher.vocab_size} tokens, the recipe's tokenizer "
            f"{pipeline.tokenizer_path} has {pipeline.vocab_size}; the student must share the teacher's "
            "tokenizer (build it from the teacher) to distil from its logits")
    spec = CacheSpec(teacher=teacher.name, tokenizer_fingerprint=pipeline.tokenizer_fingerprint,
                     vocab_size=teacher.vocab_size, k=k, seq_len=cfg.data.seq_len, logprob_dtype=logprob_dtype)
    examples = take_examples(cfg, n_examples)
    return write_cache(out, spec, examples, lambda tokens: teacher.topk(tokens, k), num_shards=num_shards,
                       process_index=jax.process_index(), process_count=jax.process_count(), progress=progress)
