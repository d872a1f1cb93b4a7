"""A run directory: its layout, the checkpoints in it, and a trained run loaded for use.

  RunPaths, load_run_config, checkpoint_steps   every file a run directory holds, by name (layout.py)
  Run, restore_params, inference_mesh           a run's config, tokenizer and parameters, restored onto the
                                                devices present (trained_run.py)
  ChatModel, run_chat_model                     a model (a run's checkpoint) answering chat prompts in
                                                batches with a key/value cache: traces from a bitjax
                                                teacher, eval's answers, training's eval (chat.py)
  checksums, legacy_layers                      what a checkpoint's metadata checks its arrays against, and
                                                checkpoints written before the blocks were stacked

Training writes run directories (bitjax.training); eval, export, generation and teachers read them here.
"""

from bitjax.run.layout import RunPaths, checkpoint_steps, load_run_config
from bitjax.run.trained_run import Run, inference_mesh, restore_params

__all__ = ["Run", "RunPaths", "checkpoint_steps", "inference_mesh", "load_run_config", "restore_params"]
