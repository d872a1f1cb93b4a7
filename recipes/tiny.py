"""The embedded default: a 3.7M-parameter ternary student on Shakespeare mixed 60/40 with a rephrased sample
that `bitjax rephrase` generated from it (data/rephrased/README.md); about 2 minutes on a 2-core CPU.

Widths are multiples of 256 so every BitLinear exports to GGUF TQ1_0/TQ2_0, and the FFN is SiLU-gated,
the variant every llama.cpp `bitnet` build runs.
"""

from pathlib import Path

from bitjax.config import CheckpointConfig, DataConfig, ModelConfig, OptimConfig, SourceConfig, TrainConfig

VOCAB = 2048
REPHRASED = Path(__file__).resolve().parent.parent / "data" / "rephrased" / "shakespeare.jsonl"


def get_config() -> TrainConfig:
    sources = (
        SourceConfig("natural", "tfds:shakespeare", weight=0.6),
        SourceConfig("rephrased", f"jsonl:{REPHRASED}", weight=0.4),
    )
    return TrainConfig(
        name="tiny",
        model=ModelConfig.tiny(vocab_size=VOCAB, ffn_activation="silu", int8_matmul=True),
        data=DataConfig(sources=sources, vocab_size=VOCAB, seq_len=128, batch_size=8),
        optim=OptimConfig(peak_lr=4e-3, stage2_peak_lr=2e-3, warmup_steps=30),
        checkpoint=CheckpointConfig(every=100),
        steps=300,
        log_every=10,
        eval_every=100,
    )
