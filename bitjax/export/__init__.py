"""Export a trained run to CPU runtimes, in the student's architecture (architectures.py: `bitnet` with SubLN,
else the source's `llama`, `qwen2` or `qwen3`).

- `--format packed`: safetensors in the Hugging Face BitNet layout (2-bit packed ternary weights with an
  `autobitlinear` offline `weight_scale`), loadable by transformers' `BitNetForCausalLM` or the source's
  `LlamaForCausalLM` / `Qwen2ForCausalLM` / `Qwen3ForCausalLM` through its BitNet quantizer, with a model card.
- `--format gguf`: llama.cpp's graph of that architecture (TQ2_0, TQ1_0, F16 or F32 ternary tensors; the
  embedding and an untied head in Q6_K by default, see embedding_quant.py), written with the `gguf` library
  (gguf_writer, gguf_layout: names and scales per architecture, gguf_verify: the read-back), with the
  tokenizer embedded so llama.cpp tokenizes by itself.

Ternary codes and scales always come from `bitjax.nn.quant.ternary_codes`, the quantizer training uses, and
every writer reads its file back and checks each code against it before the file takes its final name.
"""

from bitjax.export.api import FORMATS, GGUF_TYPES, export_run
from bitjax.export.common import ExportError

__all__ = ["ExportError", "FORMATS", "GGUF_TYPES", "export_run"]
