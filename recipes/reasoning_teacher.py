"""A reasoning teacher made by bitjax: a full-precision model trained from scratch on verified worked solutions
of chain sums (CE on the solution, the prompt masked), the way the field makes a small teacher when no stronger
model is at hand. Its held-out accuracy is `bitjax eval RUN` (the run's eval_task); the ternary student is
recipes/reasoning_student.py; recipes/reasoning_demo.sh runs the whole pipeline (docs/reasoning.md).

Its data is written by `bitjax problems` into $BITJAX_REASONING_DIR/data (default runs/reasoning/data):
  train_worked.jsonl   training problems with worked solutions (this recipe's data)
  train_direct.jsonl   the same problems with the answer alone (the student's no-traces arm)
  traces.jsonl         the teacher's sampled, verified traces of training problems (`bitjax traces`)
"""

import os
from pathlib import Path

from bitjax.config import CheckpointConfig, DataConfig, ModelConfig, OptimConfig, SourceConfig, TrainConfig

# chain sums of 4-5 one-digit terms: several steps, each easy once written down (bitjax.tasks.worked.chain_sum)
TASK = "chain_sum:min_terms=4,max_terms=5,min_digits=1,max_digits=1"
VOCAB = 384          # a BPE whose merges never join two digits (data.tokenizer="bpe-digits"); a multiple of 128
SEQ_LEN = 128        # a prompt and its worked solution are ~60 tokens; a REDI pair ~120


def data_dir() -> Path:
    return Path(os.environ.get("BITJAX_REASONING_DIR", "runs/reasoning")).resolve() / "data"


def pairs(name: str, file: str, **kw) -> SourceConfig:
    """A JSONL file of prompt/completion records: the prompt is context, the completion is trained on."""
    return SourceConfig(name, f"jsonl:{data_dir() / file}", text_field="completion", prompt_field="prompt", **kw)


def get_config() -> TrainConfig:
    steps = 1000
    return TrainConfig(
        name="reasoning_teacher",
        model=ModelConfig(vocab_size=VOCAB, d_model=256, n_layers=4, n_heads=4, n_kv_heads=4, head_dim=64, d_ff=768,
                          ffn_activation="silu", max_seq_len=2 * SEQ_LEN, quant="none"),
        # first_fit keeps every problem whole in its row (concat_then_split would cut some from their prompt)
        data=DataConfig(sources=(pairs("worked", "train_worked.jsonl"),), tokenizer="bpe-digits", vocab_size=VOCAB,
                        seq_len=SEQ_LEN, batch_size=32, packing="first_fit", heldout_fraction=0.01),
        optim=OptimConfig(peak_lr=2e-3, two_stage=False, warmup_steps=50, weight_decay=0.1, end_lr_ratio=0.1),
        checkpoint=CheckpointConfig(every=steps),
        steps=steps,
        log_every=50,
        eval_every=250,      # held-out loss and greedy accuracy on eval_task, plotted in loss_curve.png
        eval_batches=2,
        eval_task=TASK,
        eval_problems=200,
        eval_max_new_tokens=64,
    )
