"""Training a run: the jitted step, the loop, the optimizer and what a run directory gets written.

  trainer         Trainer: the model, optimizer and mesh of a run and the one jitted, donated train step;
                  train(): the loop (resume, metrics, evaluation, checkpoints, stop signals)
  optim           AdamW with BitNet b1.58 2B4T's two-stage learning-rate and weight-decay schedules
  checkpointer    Orbax checkpoints of the whole state (parameters, optimizer, step, data position), resume
  outputs         TensorBoard, metrics.jsonl, the loss curve and the summary
  wandb_run       Weights & Biases beside TensorBoard (log.wandb), one W&B run per run directory
  lock            one trainer per run directory
"""

from bitjax.training.loop import Hook, TrainLoop, train
from bitjax.training.trainer import Trainer, TrainState, zero_fractions

__all__ = ["Hook", "TrainLoop", "TrainState", "Trainer", "train", "zero_fractions"]
