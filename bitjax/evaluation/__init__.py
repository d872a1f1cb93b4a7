"""Measuring a trained run.

  heldout         held-out perplexity and answer accuracy on held-out problems (`bitjax eval`)
  generation      `bitjax generate`: stream a continuation from a GGUF, a packed export or a run directory
"""
