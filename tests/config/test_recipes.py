"""Every recipe in recipes/ loads and builds its model and optimizer state (shapes only)."""


import jax
import pytest

from bitjax.config import TrainConfig, load_recipe
from bitjax.nn.transformer import count_params
from bitjax.training.trainer import Trainer
from tests.support import RECIPES

RECIPES = sorted((RECIPES).glob("*.py"))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_builds(path):
    cfg = load_recipe(path)
    assert isinstance(cfg, TrainConfig)
    abstract = Trainer.create(cfg).abstract_state()  # model + optimizer, via eval_shape
    n = sum(x.size for x in jax.tree.leaves(abstract.params))
    assert n == count_params(cfg.model)["total"]
    assert cfg.data.vocab_size <= cfg.model.vocab_size
