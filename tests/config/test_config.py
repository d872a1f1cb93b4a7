import dataclasses

import pytest

from bitjax.config import TrainConfig, apply_overrides, load_recipe
from bitjax.errors import ConfigError


def test_overrides_convert_types():
    cfg = apply_overrides(TrainConfig(), ["optim.peak_lr=3e-4", "steps=12", "model.quant=none",
                                          "checkpoint.async_save=false", "name=abc"])
    assert cfg.optim.peak_lr == 3e-4 and cfg.steps == 12 and cfg.model.quant == "none"
    assert cfg.checkpoint.async_save is False and cfg.name == "abc"
    cfg = apply_overrides(cfg, ["log.wandb=true", "log.tags=kd, tiny", "log.project=p"])
    assert cfg.log.wandb is True and cfg.log.tags == ("kd", "tiny") and cfg.log.project == "p"
    assert apply_overrides(cfg, ["log.tags="]).log.tags == ()


@pytest.mark.parametrize("override,message", [
    ("optim.peak_lrr=1", "unknown key 'peak_lrr' in OptimConfig; known keys: b1, b2"),
    ("nonsense=1", "unknown key 'nonsense' in TrainConfig"),
    ("steps=ten", "--set steps=ten: expected int"),
    ("optim.peak_lr=fast", "expected float"),
    ("model.quant=binary", "expected one of ternary, none"),
    ("optim=1", "'optim' is a section"),
    ("steps", "is not key=value"),
    ("steps=-3", "steps=-3 must be positive"),
    ("model.n_kv_heads=3", "not a multiple of model.n_kv_heads=3"),
])
def test_bad_overrides_name_the_problem(override, message):
    with pytest.raises(ConfigError) as err:
        apply_overrides(TrainConfig(), [override])
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_recipe(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_recipe(tmp_path / "nope.py")


def test_recipe_without_get_config(tmp_path):
    path = tmp_path / "r.py"
    path.write_text("x = 1\n")
    with pytest.raises(ConfigError, match=r"has no get_config\(\)"):
        load_recipe(path)


def test_configs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        TrainConfig().steps = 3


def test_config_round_trips_through_dict():
    cfg = apply_overrides(TrainConfig(), ["model.n_layers=3", "optim.peak_lr=1e-4", "log.tags=a,b"])
    from bitjax.config import from_dict
    assert from_dict(TrainConfig, dataclasses.asdict(cfg)) == cfg
    older = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "log"}   # a run from before `log`
    assert from_dict(TrainConfig, older).log == TrainConfig().log
