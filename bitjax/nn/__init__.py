"""The network: quantizers, BitLinear, attention, the BitNet b1.58 transformer, decoding.

  quant           ternary absmean weights, int8 absmax activations, the straight-through estimator, lambda
  int8_matmul     BitLinear's int8 x ternary matmul with int32 sums and its straight-through backward
  layers          BitLinear, Linear, RMSNorm (Flax NNX)
  attention       grouped-query attention kernels: XLA, chunked, splash (TPU), cuDNN (GPU)
  rope            rotary position embedding and its frequency scalings (linear, llama3, yarn, per-pair factors)
  model_config    ModelConfig: shape and numerics, validated, and the size presets
  transformer     Transformer: the decoder (blocks stacked and scanned), its KV-cache decoding step
  layer_stack     the one mapping between stacked block variables and per-layer names (`layers.3.mlp...`)
  decode          batched greedy decoding with a key/value cache

    from bitjax.nn import BitLinear, ModelConfig, RMSNorm, Transformer
"""

from bitjax.nn.layers import BitLinear, Linear, RMSNorm
from bitjax.nn.model_config import PRESETS, ModelConfig
from bitjax.nn.transformer import Transformer, count_params

__all__ = ["PRESETS", "BitLinear", "Linear", "ModelConfig", "RMSNorm", "Transformer", "count_params"]
