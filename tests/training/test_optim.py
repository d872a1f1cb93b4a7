import jax.numpy as jnp
import numpy as np
import pytest

from bitjax.config import OptimConfig
from bitjax.training.optim import decay_mask, learning_rate_schedule, weight_decay_schedule

CFG = OptimConfig(peak_lr=1e-2, stage2_peak_lr=4e-3, end_lr_ratio=0.1, warmup_steps=10, weight_decay=0.1)


def test_two_stage_learning_rate():
    lr = learning_rate_schedule(CFG, 100)
    assert float(lr(0)) == 0.0
    assert float(lr(10)) == pytest.approx(1e-2)                 # peak after warmup
    assert float(lr(49)) == pytest.approx(1e-3, rel=0.05)       # stage 1 ends near end_lr_ratio * peak
    assert float(lr(50)) == pytest.approx(4e-3)                 # abrupt restart at the lower stage-2 peak
    assert float(lr(99)) == pytest.approx(4e-4, rel=0.05)
    values = np.array([float(lr(s)) for s in range(10, 50)])
    assert np.all(np.diff(values) <= 1e-12)                      # cosine decays monotonically


def test_weight_decay_cosine_then_zero():
    wd = weight_decay_schedule(CFG, 100)
    assert float(wd(0)) == pytest.approx(0.1)
    assert 0.0 < float(wd(25)) < 0.1
    assert float(wd(50)) == 0.0 and float(wd(99)) == 0.0


def test_single_stage_option():
    cfg = OptimConfig(peak_lr=1e-2, warmup_steps=10, two_stage=False, weight_decay=0.05)
    assert float(learning_rate_schedule(cfg, 100)(60)) < 1e-2
    assert float(weight_decay_schedule(cfg, 100)(90)) == pytest.approx(0.05)


def test_norm_scales_are_not_decayed():
    mask = decay_mask({"kernel": jnp.ones((2, 2)), "scale": jnp.ones((2,))})
    assert mask == {"kernel": True, "scale": False}
