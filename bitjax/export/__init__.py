"""Export a trained run to CPU runtimes.

- `--format packed`: safetensors in the Hugging Face BitNet layout (2-bit packed ternary weights with an
  `autobitlinear` offline `weight_scale`), loadable by `transformers.BitNetForCausalLM`, with a model card.
- `--format gguf`: llama.cpp's `bitnet` architecture (TQ2_0, TQ1_0, F16 or F32 ternary tensors; the tied
  embedding in Q6_K by default, see embedding_quant.py), written with the `gguf` library, with the tokenizer
  embedded so llama.cpp tokenizes by itself.

Ternary codes and scales always come from `bitjax.nn.quant.ternary_codes`, the quantizer training uses, and
every writer reads its file back and checks each code against it before the file takes its final name.
"""

from bitjax.export.api import FORMATS, GGUF_TYPES, export_run
from bitjax.export.common import ExportError

__all__ = ["ExportError", "FORMATS", "GGUF_TYPES", "export_run"]
