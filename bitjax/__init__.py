"""bitjax: train native 1.58-bit (ternary) BitNet students in JAX/Flax NNX, distil them, ship them to CPUs.

Where things are (docs/layout.md has the whole plan):
  bitjax.quant, bitjax.layers, bitjax.model    quantizers, BitLinear, the BitNet b1.58 decoder
  bitjax.losses, bitjax.objective              loss terms; what each data source's rows are trained on
  bitjax.config, bitjax.train, bitjax.run      recipes and overrides; the trainer; a trained run directory
  bitjax.data                                  Grain pipelines: sources, packing, mixing, caches, trace files
  bitjax.teachers                              teachers, cache writing, trace sampling, rephrasing
  bitjax.export                                packed safetensors and GGUF writers and their checks
  bitjax.errors                                the one error base class the command line catches
"""

__version__ = "0.1.0"
