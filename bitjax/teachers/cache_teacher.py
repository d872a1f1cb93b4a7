"""`bitjax cache-teacher`: run a teacher over a recipe's distillation sources and write top-k caches.

Every data source whose objective is "kd" gets its own cache, `OUT/<source name>/`
(bitjax.data.teacher_files.topk_cache): the first sequences that source streams (shuffled and packed exactly
as training would read them), with the teacher's top-k log-probabilities at every position. `n_examples`
sequences are shared out over the "kd" sources by their mixing weights. Training then reads those sequences
from the cache.

Backends (`--backend`, default `distill.cache_backend`):
  native  the teacher in its own runtime, one packed document at a time: llama.cpp for gguf:, CPU torch for
          hf:, a jitted bitjax forward for bitjax: (bitjax.teachers.backends)
  jax     the teacher imported into a full-precision bitjax model, jitted and sharded over the recipe's mesh,
          `data.batch_size` packed rows per forward, every process writing its own shards
          (bitjax.teachers.jax_teacher); OUT may be a gs:// bucket
"""

from __future__ import annotations

import os

import jax

from bitjax import data as data_lib
from bitjax import sharding as sharding_lib
from bitjax.config import TrainConfig
from bitjax.data import coverage
from bitjax.data.teacher_files.topk_cache import CacheSpec
from bitjax.data.teacher_files.topk_cache_writer import write_cache
from bitjax.errors import ConfigError
from bitjax.paths import cache_location
from bitjax.teachers import jax_teacher
from bitjax.teachers.backends import check_teacher_spec, open_teacher

BACKENDS = ("native", "jax")


def examples_per_source(cfg: TrainConfig, n_examples: int) -> dict[str, int]:
    """How many sequences to cache for each "kd" source (the plan `bitjax plan` prints, too)."""
    counts = coverage.cache_examples_per_source(cfg, n_examples)
    if not counts:
        raise ConfigError("the recipe has no data source with objective 'kd' to cache a teacher for; give a text "
                          "source SourceConfig(..., objective='kd')")
    return counts


def cache_teacher(cfg: TrainConfig, teacher_spec: str, out: str | os.PathLike, *, k: int = 32,
                  n_examples: int = 256, num_shards: int = 4, logprob_dtype: str = "float16",
                  backend: str | None = None, process_index: int | None = None, process_count: int | None = None,
                  progress: bool = True) -> dict:
    """Write one cache per "kd" source under `out`; returns {source: manifest} (empty while unfinished).

    `process_index` / `process_count` (default: JAX's) choose the shards this call writes (s % count == index).
    """
    backend = backend or cfg.distill.cache_backend
    if n_examples < 1 or num_shards < 1 or k < 1:
        raise ConfigError(f"cache-teacher: examples={n_examples}, shards={num_shards} and k={k} must each be >= 1")
    if backend not in BACKENDS:
        raise ConfigError(f"cache-teacher: backend {backend!r} is not one of {', '.join(BACKENDS)}")
    counts = examples_per_source(cfg, n_examples)
    check_teacher_spec(teacher_spec)   # before the (slow) pipeline
    out = cache_location(out, "--out")
    if backend == "jax":

        sharding_lib.initialize_distributed(cfg.mesh)   # before anything touches a device
        jax_teacher.check_vocabulary(teacher_spec, cfg)
    pipeline = data_lib.build_pipeline(cfg.data, text_only=True)
    if backend == "jax":
        teacher = jax_teacher.JaxTeacher(teacher_spec, cfg, k)
        rows = teacher.row_teacher()
        if progress:
            print(f"teacher {teacher.name} on a {teacher.describe()}", flush=True)
    else:
        teacher = open_teacher(teacher_spec)
        if teacher.vocab_size != pipeline.vocab_size:
            raise ConfigError(
                f"teacher {teacher.name} has a vocabulary of {teacher.vocab_size} tokens, the recipe's tokenizer "
                f"{pipeline.tokenizer_path} has {pipeline.vocab_size}; the student must share the teacher's "
                "tokenizer (build it from the teacher) to distil from its logits")
        rows = lambda tokens: teacher.topk(tokens, k)   # noqa: E731 - one packed document at a time
    spec = CacheSpec(teacher=teacher.name, tokenizer_fingerprint=pipeline.tokenizer_fingerprint,
                     vocab_size=teacher.vocab_size, k=k, seq_len=cfg.data.seq_len, logprob_dtype=logprob_dtype)
    index = jax.process_index() if process_index is None else process_index
    count = jax.process_count() if process_count is None else process_count
    manifests = {}
    for name, n in counts.items():
        if progress:
            print(f"source {name!r}: {n} sequences of {cfg.data.seq_len} tokens -> {out / name}", flush=True)
        manifests[name] = write_cache(out / name, spec, pipeline.source_examples(name), rows, n_examples=n,
                                      num_shards=min(num_shards, n), process_index=index, process_count=count,
                                      progress=progress)
    return manifests if all(manifests.values()) else {}
