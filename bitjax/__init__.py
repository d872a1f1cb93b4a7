"""bitjax: train native 1.58-bit (ternary) BitNet students in JAX/Flax NNX, distil them, ship them to CPUs.

The packages, bottom layer first (each imports only the layers below it; docs/layout.md has the whole plan):
  errors, paths, tokenizer    the error type the command line catches; user locations; tokenizers
  nn                          quantizers, BitLinear, attention, the BitNet b1.58 transformer, decoding
  sharding                    the (data, fsdp, tensor) mesh and the one partition-rule table
  losses                      loss terms, divergences, the chunked head, the objectives (ce, kd, sft, redi)
  config                      TrainConfig and its sections, recipes and `--set` overrides
  data, tasks                 Grain pipelines (sources, packing, mixing, caches, trace files); reasoning tasks
  run                         a run directory: its layout, checkpoints, and a trained run loaded for use
  pretrained                  model specs (gguf:, hf:, bitjax:), Hugging Face and GGUF import, init_from
  export                      packed safetensors and GGUF writers and their runtime checks
  evaluation, teachers        held-out metrics and `bitjax generate`; teachers, caches, traces, rephrasing
  training                    the jitted step, the loop and its hooks, optimizer, checkpointer
  fit_check                   the step's size and speed: compiled for TPU slices on a CPU, or timed where it runs
  cli                         the `bitjax` command
`bitjax.layers` and `bitjax.model` keep the researchers' import paths of BitLinear and the transformer.

Dimension letters, one meaning each across the package (suffixes on array names, e.g. `x_BLD`):
  B  batch rows                          L  sequence positions (queries)
  M  key positions (attention)           T  slots of a decoding key/value cache
  P  prompt positions (decoding)         C  positions in one chunk of the sequence
  J  chunks of a sequence (L / C)        D  model width
  N  query heads                         K  key/value heads
  G  query heads per key/value head      H  head width
  F  feed-forward width                  V  vocabulary
  W  a projection's width (heads x H)    R  relation heads (the attention-relation loss)
  O  a weight's output features          I  a weight's input features
  Q  rows of a packed ternary matrix (ceil(O / 4): four codes a byte)
  E  the teacher's top-k entries per position (distill.k)
  U  outcomes of a KD support (E, or E + 1 with the tail bucket)
  S  the row sources of a batch (DataConfig.row_sources)
  Z  layers: the stacked blocks' leading axis
A `1` is a broadcast axis of size one.
"""

__version__ = "0.1.0"
