"""`from bitjax.model import Transformer, ModelConfig`: the model's public name since the first release.

The transformer lives in bitjax.nn.transformer and its config in bitjax.nn.model_config; this module keeps
the import path researchers use working.
"""

from bitjax.nn.model_config import PRESETS, ModelConfig
from bitjax.nn.transformer import Transformer, count_params

__all__ = ["PRESETS", "ModelConfig", "Transformer", "count_params"]
