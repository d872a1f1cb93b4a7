"""Measuring a trained run.

  heldout         held-out perplexity and answer accuracy on held-out problems (`bitjax eval`)
  task_accuracy   how many of a task's held-out problems a run solves: pass@1, pass@k, maj@k
  generation      `bitjax generate`: stream a continuation from a GGUF, a packed export or a run directory
  scoring         many sequences scored or continued greedily by a run, batched on its devices
  gguf_scoring    the same for a GGUF in llama.cpp
  lm_eval_model   the lm-evaluation-harness model "bitjax" (imports lm-eval: the lm-eval extra)
"""
