"""BitNet b1.58 2B4T: its exact shape and its two-stage schedule, distilled from a cached teacher.

Shape (arXiv 2504.12285): 2560 wide, 30 layers, 20 query / 5 KV heads of 128, FFN 6912 with relu2,
LLaMA-3 vocabulary (128256), RoPE theta 500000, 4096-token sequences, tied embeddings.

Schedule: stage 1 is a warmup and cosine from a high peak with weight decay on a cosine from 0.1;
midway the learning rate drops abruptly to a cosine from a lower peak with weight decay 0 (the paper
publishes the shape of the schedule, not the peak values: these are ours). The paper trains on 4T
tokens; here `steps` times the v5p-128 batch (128 x 4096 = 0.5M tokens) is 63B tokens.
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
    # Or tokenize it once (`bitjax tokenize recipes/bitnet_2b4t.py --out tokens`, each host its share of the
    # files) and read `tokens:tokens/fineweb_edu` from local disk or a gcsfuse mount.
)
# The LLaMA-3 tokenizer (128256 tokens) is not shipped: save its tokenizer.json here (or --set data.tokenizer=PATH).
LLAMA3_TOKENIZER = "tokenizers/llama-3/tokenizer.json"

# A teacher with the LLaMA-3 vocabulary, as a local transformers directory (not shipped).
TEACHER = "hf:teachers/llama-3-8b"
DISTILL_CACHE = "caches/bitnet_2b4t-teacher-k32"   # the distillation hook: one teacher cache per source under it

PRESETS = {
    "v5p-64": ["mesh.data=1", "mesh.fsdp=32", "data.batch_size=64", "mesh.distributed=on"],
    "v5p-128": ["mesh.data=2", "mesh.fsdp=32", "data.batch_size=128", "mesh.distributed=on"],
    "v4-64": ["mesh.data=1", "mesh.fsdp=32", "data.batch_size=32", "mesh.distributed=on"],
    "v6e-64": ["mesh.data=1", "mesh.fsdp=64", "data.batch_size=128", "mesh.distributed=on"],
    "h100x1": ["mesh.data=1", "data.batch_size=1", "mesh.distributed=off"],
    "h100x8": ["mesh.data=1", "mesh.fsdp=8", "data.batch_size=8", "mesh.distributed=off"],
}


def get_config() -> TrainConfig:
    return TrainConfig(
        name="bitnet_2b4t",
        model=ModelConfig.bitnet_2b4t(dtype="bfloat16", remat="full", int8_matmul=True),
        data=DataConfig(sources=SOURCES,
                        tokenizer=LLAMA3_TOKENIZER, vocab_size=128256, seq_len=4096, batch_size=64),
        distill=DistillConfig(cache=DISTILL_CACHE, teacher=TEACHER, cache_examples=131072, kind="forward_kl",
                              # the teacher runs on the accelerators the student trains on (--backend jax)
                              cache_backend="jax",
                              kd_weight=0.9, kd_warmup_steps=1000),
        optim=OptimConfig(peak_lr=1.5e-3, stage2_peak_lr=5e-4, end_lr_ratio=0.1, warmup_steps=2000,
                          two_stage=True, stage_split=0.5, weight_decay=0.1),
        checkpoint=CheckpointConfig(every=1000, keep=3),
        steps=120_000,
        log_every=50,
        eval_every=2000,
    )
