"""BitNet b1.58 700M student (the paper's 700M shape) distilled from a cached teacher.

Presets as in bitnet_125m.py: `bitjax train recipes/bitnet_700m.py --preset v5p-64` on every worker of
a v5p-64 slice, `bitjax fit-check recipes/bitnet_700m.py --topology v5p-64` before paying for it.
Sequences of 2048 tokens, blocks rematerialised, parameters and optimizer state FSDP-sharded.
"""

from pathlib import Path

from bitjax.config import (
    CheckpointConfig,
    DataConfig,
    DistillConfig,
    ModelConfig,
    OptimConfig,
    SourceConfig,
    TrainConfig,
)

REPHRASED = Path(__file__).resolve().parent.parent / "data" / "rephrased" / "shakespeare.jsonl"
# Natural 60% / rephrased 40% (BeyondWeb's split). The shipped corpora are small stand-ins so the recipe
# runs offline; for a real run point these at your own `parquet:`, `jsonl:`, `arrayrecord:` or `tokens:`
# data (paths or globs, local or gs://).
# Every source distils ("kd"): training reads its cached sequences with the teacher's top-k. The caches hold a
# small part of what the run draws (`bitjax plan` prints how much), so each source reads its cache once and then
# continues with its text after the cached sequences under plain CE (on_cache_exhausted="ce"), instead of
# reading the same cached sequences dozens of times.
SOURCES = (
    SourceConfig("shakespeare", "tfds:shakespeare", weight=0.3, objective="kd", on_cache_exhausted="ce"),
    SourceConfig("kjv", "tfds:kjv", weight=0.3, objective="kd", on_cache_exhausted="ce"),
    SourceConfig("rephrased", f"jsonl:{REPHRASED}", weight=0.4, objective="kd", on_cache_exhausted="ce"),
    # A web-scale corpus streams from a bucket (files sharded over the data shards, tokenized on the fly; at
    # least as many files as data shards). FineWeb-Edu's sample is Parquet files with a `text` column:
    #   SourceConfig("fineweb_edu", "parquet:gs://BUCKET/fineweb-edu/sample/10BT/*.parquet", weight=0.6),
    # (objective "ce": plain text; a "kd" source reads its teacher cache, then its text under CE as above).
    # Or tokenize it once (`bitjax tokenize recipes/bitnet_700m.py --out tokens`, each host its share of the
    # files) and read `tokens:tokens/fineweb_edu` from local disk or a gcsfuse mount.
)

# The embedded SmolLM2-135M-Instruct shares the 49152-token vocabulary; any bigger SmolLM2 GGUF works too.
TEACHER = "gguf:smollm2"
DISTILL_CACHE = "caches/bitnet_700m-teacher-k32"   # the distillation hook: one teacher cache per source under it

PRESETS = {
    "v5p-64": ["mesh.data=1", "mesh.fsdp=32", "data.batch_size=256", "mesh.distributed=on"],
    "v4-32": ["mesh.data=1", "mesh.fsdp=16", "data.batch_size=128", "mesh.distributed=on"],
    "v5e-64": ["mesh.data=1", "mesh.fsdp=64", "data.batch_size=128", "mesh.distributed=on"],
    "v6e-64": ["mesh.data=1", "mesh.fsdp=64", "data.batch_size=256", "mesh.distributed=on"],
    "h100x1": ["mesh.data=1", "data.batch_size=8", "mesh.distributed=off"],
    "h100x8": ["mesh.data=1", "mesh.fsdp=8", "data.batch_size=64", "mesh.distributed=off"],
}


def get_config() -> TrainConfig:
    return TrainConfig(
        name="bitnet_700m",
        model=ModelConfig.bitnet_700m(dtype="bfloat16", remat="full", int8_matmul=True),
        data=DataConfig(sources=SOURCES,
                        tokenizer="smollm2", vocab_size=49152, seq_len=2048, batch_size=256),
        distill=DistillConfig(cache=DISTILL_CACHE, teacher=TEACHER, cache_examples=131072, kind="forward_kl",
                              # the teacher runs on the accelerators the student trains on (--backend jax)
                              cache_backend="jax",
                              kd_weight=0.9, kd_warmup_steps=500),
        optim=OptimConfig(peak_lr=1.2e-3, stage2_peak_lr=8e-4, warmup_steps=1000),
        checkpoint=CheckpointConfig(every=1000, keep=3),
        steps=50_000,
        log_every=50,
        eval_every=1000,
    )
