"""Random (untrained) models of any shape for the export tests."""

from flax import nnx

from bitjax.export.model_source import TernaryModel, flatten_params
from bitjax.nn.model_config import ModelConfig
from bitjax.nn.transformer import Transformer


def random_model(tokenizer_path=None, **config) -> tuple[ModelConfig, Transformer, TernaryModel]:
    cfg = ModelConfig.tiny(**{"vocab_size": 2048, "n_layers": 1, **config})
    model = Transformer(cfg, rngs=nnx.Rngs(0))
    params = flatten_params(nnx.state(model, nnx.Param))
    return cfg, model, TernaryModel.from_params(cfg, params, tokenizer_path=tokenizer_path, step=0)
