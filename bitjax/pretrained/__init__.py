"""Pretrained models as bitjax models, and a student's first parameters from one.

  hf              Hugging Face checkpoints (llama, mistral, qwen2, bitnet: config.json + safetensors)
  gguf            GGUF files (llama, qwen2, bitnet), any tensor type gguf-py dequantizes
  init_from       a student converted from a pretrained model (BitDistill: SubLN inserted, gradual quantization)
  spec            THE model-spec parser (gguf:, hf:, bitjax:), for every caller
  hub             Hugging Face Hub ids in specs, fetched into huggingface_hub's cache
"""

from bitjax.pretrained.gguf import gguf_model, gguf_model_config, load_gguf
from bitjax.pretrained.hf import hf_model, hf_model_config, load_hf

__all__ = ["gguf_model", "gguf_model_config", "hf_model", "hf_model_config", "load_gguf", "load_hf"]
