"""Validation helpers shared by the config sections: one-line ConfigErrors naming the `--set` key."""

from __future__ import annotations

import math

from bitjax.errors import ConfigError


def key(cfg, name: str) -> str:
    section = type(cfg).__name__.replace("Config", "").lower()
    return name if section == "train" else f"{section}.{name}"


def positive(cfg, *names):
    for name in names:
        if not getattr(cfg, name) > 0:   # written so that NaN fails too
            raise ConfigError(f"{key(cfg, name)}={getattr(cfg, name)} must be positive")


def finite(cfg, *names):
    """NaN or an infinity in a float setting would train silently into NaN losses: refuse it here."""
    for name in names:
        value = getattr(cfg, name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{key(cfg, name)}={value} must be a finite number")
