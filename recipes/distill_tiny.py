"""The embedded distillation default: a 16M-parameter ternary student (3.1M in BitLinear layers) sharing
SmolLM2's 49152-token vocabulary, distilled from the embedded SmolLM2-135M-Instruct teacher.

Data, mixed by Grain at these weights:
  natural    0.55  Shakespeare, KD from the teacher's cached top-32 (objective "kd")
  rephrased  0.35  the rephrased sample in data/rephrased, KD likewise ("kd"; BeyondWeb's 60/40 split of text)
  sft        0.05  the teacher's correct reasoning traces on gsm_symbolic problems (data/traces), CE on completions
  redi       0.05  the same traces as REDI pairs (a correct and a wrong completion of one problem)

    bitjax cache-teacher recipes/distill_tiny.py      # the teacher's top-32 for the sequences KD trains on
    bitjax train recipes/distill_tiny.py
    bitjax eval runs/distill_tiny                     # held-out perplexity and gsm_symbolic answer accuracy

Rows are 512 tokens so that a REDI pair (two prompt + completion segments) fits in one. Widths are
multiples of 256 and the FFN is SiLU-gated, so the student exports to GGUF TQ1_0/TQ2_0.
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

DATA = Path(__file__).resolve().parent.parent / "data"
TRACES = DATA / "traces" / "train.jsonl"


def get_config() -> TrainConfig:
    sources = (
        SourceConfig("natural", "tfds:shakespeare", weight=0.55, objective="kd"),
        SourceConfig("rephrased", f"jsonl:{DATA / 'rephrased' / 'shakespeare.jsonl'}", weight=0.35, objective="kd"),
        SourceConfig("sft", f"traces:{TRACES}", weight=0.05, objective="sft"),
        SourceConfig("redi", f"traces:{TRACES}", weight=0.05, objective="redi"),
    )
    return TrainConfig(
        name="distill_tiny",
        # int8 x int8 BitLinear matmuls: exact on the ternary grid, and the step ran 12% faster on a 2-core CPU
        # (python -m benchmarks.step_time --set model.int8_matmul=true, against the plain paths)
        model=ModelConfig.tiny(vocab_size=49152, ffn_activation="silu", int8_matmul=True),
        data=DataConfig(sources=sources, tokenizer="smollm2", seq_len=512, batch_size=2),
        # the LM head in one block: on a CPU memory is plentiful and a recomputed head would cost ~1/4 of the step
        loss_chunk=512,
        distill=DistillConfig(cache="caches/distill_tiny-k32", teacher="gguf:smollm2", k=32, cache_examples=96,
                              kind="forward_kl", kd_weight=0.9, temperature=1.0),
        optim=OptimConfig(peak_lr=4e-3, stage2_peak_lr=2e-3, warmup_steps=30),
        checkpoint=CheckpointConfig(every=100),
        steps=300,
        log_every=10,
        eval_every=100,
        eval_batches=4,
        eval_prompts=str(DATA / "traces" / "gsm_symbolic_heldout.jsonl"),
        eval_max_new_tokens=192,
    )
