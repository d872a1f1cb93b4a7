"""SmolLM2-135M-Instruct converted into a ternary student and distilled from itself (BitDistill's recipe, small).

The student has SmolLM2's shape (30 layers, 576 wide, 9/3 heads, FFN 1536, SiLU, tied head, its 49152-token
vocabulary) plus BitNet's SubLN norms, inserted with unit scales. Its first parameters are the embedded GGUF's,
dequantized (`init_from`); quantization ramps in over the first 100 steps (lambda 0 -> 1) while it distils from
the same model's cached top-32 on Shakespeare:

    bitjax cache-teacher recipes/smollm2_ternary.py
    bitjax train recipes/smollm2_ternary.py
    bitjax eval runs/smollm2_ternary

Widths are multiples of 64 but not of 256 (576, 1536): `bitjax export ... --format gguf` (TQ2_0) zero-pads them
(576 -> 768, 1536 -> 2048), which computes the same network in llama.cpp (docs/export.md, "Padded widths");
`--format packed` writes them as they are for transformers.
"""

from bitjax.config import (
    CheckpointConfig,
    DataConfig,
    DistillConfig,
    ModelConfig,
    OptimConfig,
    SourceConfig,
    TrainConfig,
)


def get_config() -> TrainConfig:
    return TrainConfig(
        name="smollm2_ternary",
        model=ModelConfig(vocab_size=49152, d_model=576, n_layers=30, n_heads=9, n_kv_heads=3, head_dim=64,
                          d_ff=1536, ffn_activation="silu", max_seq_len=8192, rope_theta=100_000.0,
                          norm_eps=1e-5, sub_norms=True),
        init_from="gguf:smollm2",
        quant_warmup_steps=100,
        # The 64 cached sequences (minutes of llama.cpp on a CPU) are read again and again over the 300 steps
        # (`bitjax plan`: about 9 times): this small self-distillation keeps the teacher's signal on every step.
        data=DataConfig(sources=(SourceConfig("natural", "tfds:shakespeare", objective="kd",
                                              on_cache_exhausted="repeat"),),
                        tokenizer="smollm2", seq_len=256, batch_size=2),
        distill=DistillConfig(cache="caches/smollm2_ternary-k32", teacher="gguf:smollm2", k=32, cache_examples=64,
                              kind="forward_kl", kd_weight=0.9),
        # 1e-3, as from scratch: at 60 steps the converted student reached 6.54 nats/token at 1e-3 and 8.57 at
        # 1e-4 (benchmarks/pretrained_init.py, docs/benchmarks.md); the ternary network must move far from the
        # dequantized weights, and a fine-tuning rate leaves it near them.
        optim=OptimConfig(peak_lr=1e-3, stage2_peak_lr=5e-4, warmup_steps=20, weight_decay=0.0),
        checkpoint=CheckpointConfig(every=100),
        steps=300,
        log_every=10,
        eval_every=100,
        eval_batches=4,
    )
