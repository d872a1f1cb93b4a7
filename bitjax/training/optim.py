"""AdamW with the two-stage schedules of BitNet b1.58 2B4T (arXiv 2504.12285).

Stage 1: linear warmup to `peak_lr`, cosine decay; weight decay follows a cosine from
`weight_decay` down. Midway (`stage_split`) the learning rate drops abruptly to
`stage2_peak_lr` and decays by a second cosine, with weight decay 0 ("cooldown").
Gradients are clipped by global norm first. Norm scales (1-D parameters) are not decayed.
"""

from __future__ import annotations

import jax
import optax

from bitjax.config import OptimConfig


def stage_boundary(cfg: OptimConfig, total_steps: int) -> int:
    return max(1, int(round(total_steps * cfg.stage_split)))


def learning_rate_schedule(cfg: OptimConfig, total_steps: int) -> optax.Schedule:
    warmup = min(cfg.warmup_steps, max(total_steps - 1, 0))
    if not cfg.two_stage:
        return optax.warmup_cosine_decay_schedule(
            0.0, cfg.peak_lr, warmup, max(total_steps, warmup + 1), cfg.peak_lr * cfg.end_lr_ratio)
    split = stage_boundary(cfg, total_steps)
    warmup = min(warmup, split - 1)
    stage1 = optax.warmup_cosine_decay_schedule(
        0.0, cfg.peak_lr, warmup, max(split, warmup + 1), cfg.peak_lr * cfg.end_lr_ratio)
    stage2 = optax.cosine_decay_schedule(
        cfg.stage2_peak_lr, max(total_steps - split, 1), alpha=cfg.end_lr_ratio)
    return optax.join_schedules([stage1, stage2], [split])


def weight_decay_schedule(cfg: OptimConfig, total_steps: int) -> optax.Schedule:
    if not cfg.two_stage:
        return optax.constant_schedule(cfg.weight_decay)
    split = stage_boundary(cfg, total_steps)
    stage1 = optax.cosine_decay_schedule(cfg.weight_decay, split)
    return optax.join_schedules([stage1, optax.constant_schedule(0.0)], [split])


def decay_mask(params):
    """Decay matrices (kernels, embedding), not the 1-D RMSNorm scales."""
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def make_optimizer(cfg: OptimConfig, total_steps: int) -> optax.GradientTransformation:
    """Clip, then AdamW whose learning rate and weight decay are injected hyperparameters (logged each step)."""
    adamw = optax.inject_hyperparams(optax.adamw, static_args=("mask",))(
        learning_rate=learning_rate_schedule(cfg, total_steps),
        weight_decay=weight_decay_schedule(cfg, total_steps),
        b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, mask=decay_mask,
    )
    return optax.chain(optax.clip_by_global_norm(cfg.clip_norm), adamw)


def current_hyperparams(opt_state) -> dict:
    """The learning rate and weight decay used by the last update, from the injected-hyperparams state."""
    hyper = opt_state[1].hyperparams
    return {"lr": hyper["learning_rate"], "weight_decay": hyper["weight_decay"]}
