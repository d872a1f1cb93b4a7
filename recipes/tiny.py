"""The embedded default: a 4M-parameter ternary student on Shakespeare, minutes on a 2-core CPU."""

from bitjax.config import CheckpointConfig, DataConfig, OptimConfig, TrainConfig
from bitjax.model import ModelConfig


def get_config() -> TrainConfig:
    return TrainConfig(
        name="tiny",
        model=ModelConfig.tiny(vocab_size=4096, ffn_activation="silu"),
        data=DataConfig(corpus="shakespeare", vocab_size=4096, seq_len=128, batch_size=16),
        optim=OptimConfig(peak_lr=3e-3, stage2_peak_lr=1.5e-3, warmup_steps=50),
        checkpoint=CheckpointConfig(every=100),
        steps=400,
        log_every=10,
        eval_every=100,
    )
