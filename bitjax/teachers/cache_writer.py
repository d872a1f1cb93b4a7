"""`bitjax cache-teacher`: run a teacher over a recipe's distillation sources and write top-k caches.

Every data source whose objective is "kd" gets its own cache, `OUT/<source name>/` (bitjax.data.topk_cache):
the first sequences that source streams (shuffled and packed exactly as training would read them), with
the teacher's top-k log-probabilities at every position. `n_examples` sequences are shared out over
the "kd" sources by their mixing weights. Training then reads those sequences from the cache.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import jax
import numpy as np

from bitjax import data as data_lib
from bitjax.config import ConfigError, TrainConfig
from bitjax.data.topk_cache import CacheSpec, write_cache
from bitjax.teachers.backends import check_teacher_spec, open_teacher


def examples_per_source(cfg: TrainConfig, n_examples: int) -> dict[str, int]:
    """How many sequences to cache for each "kd" source: `n_examples` split by weight, at least one each."""
    weights = cfg.data.mixture_weights()
    kd = {s.name: weights[s.name] for s in cfg.data.sources if s.needs_teacher and weights[s.name] > 0}
    if not kd:
        raise ConfigError("the recipe has no data source with objective 'kd' to cache a teacher for; give a text "
                          "source SourceConfig(..., objective='kd')")
    total = sum(kd.values())
    return {name: max(1, round(n_examples * w / total)) for name, w in kd.items()}


def take_examples(pipeline, name: str, n: int) -> list[dict[str, np.ndarray]]:
    """The first `n` sequences of a source, as training streams them from its first data shard."""
    return list(itertools.islice(pipeline.source_examples(name), n))


def cache_teacher(cfg: TrainConfig, teacher_spec: str, out: str | Path, *, k: int = 32, n_examples: int = 256,
                  num_shards: int = 4, logprob_dtype: str = "float16", progress: bool = True) -> dict:
    """Write one cache per "kd" source under `out`; returns {source: manifest} (empty while unfinished)."""
    if n_examples < 1 or num_shards < 1 or k < 1:
        raise ConfigError(f"cache-teacher: examples={n_examples}, shards={num_shards} and k={k} must each be >= 1")
    counts = examples_per_source(cfg, n_examples)
    check_teacher_spec(teacher_spec)   # before the (slow) pipeline
    pipeline = data_lib.build_pipeline(cfg.data, text_only=True)
    teacher = open_teacher(teacher_spec)
    if teacher.vocab_size != pipeline.vocab_size:
        raise ConfigError(
            f"teacher {teacher.name} has a vocabulary of {teacher.vocab_size} tokens, the recipe's tokenizer "
            f"{pipeline.tokenizer_path} has {pipeline.vocab_size}; the student must share the teacher's "
            "tokenizer (build it from the teacher) to distil from its logits")
    spec = CacheSpec(teacher=teacher.name, tokenizer_fingerprint=pipeline.tokenizer_fingerprint,
                     vocab_size=teacher.vocab_size, k=k, seq_len=cfg.data.seq_len, logprob_dtype=logprob_dtype)
    manifests = {}
    for name, n in counts.items():
        if progress:
            print(f"source {name!r}: {n} sequences of {cfg.data.seq_len} tokens -> {Path(out) / name}", flush=True)
        manifests[name] = write_cache(
            Path(out) / name, spec, take_examples(pipeline, name, n), lambda tokens: teacher.topk(tokens, k),
            num_shards=min(num_shards, n), process_index=jax.process_index(), process_count=jax.process_count(),
            progress=progress)
    return manifests if all(manifests.values()) else {}
