"""Rotary position embedding and the scalings of its frequencies: the one place RoPE's angles are computed.

    inverse_frequencies(head_dim, theta, scaling)   (H/2,) float64: the angle each rotary pair turns per position
    rope(x_BLNH, positions_BL, theta, scaling)      x rotated, half-split ("NEOX") pairs

Scalings (`RopeScaling.kind`), each computed as transformers computes it (`modeling_rope_utils`):
  none          plain RoPE: theta ** (-2i / H)
  linear        every frequency divided by `factor` (position interpolation)
  llama3        Llama 3.1 / 3.2: frequencies whose wavelength exceeds original_max_len / low_freq_factor are
                divided by `factor`, those shorter than original_max_len / high_freq_factor are kept, and the
                ones between blend the two smoothly
  yarn          YaRN: interpolated and extrapolated frequencies blended over a linear ramp between the
                dimensions that turn beta_fast and beta_slow times over original_max_len; cos and sin are
                multiplied by `attention_factor` (0: YaRN's 0.1 ln(factor) + 1)
  freq_factors  each frequency divided by its own factor, as given: a GGUF's `rope_freqs` tensor, llama.cpp's
                form of llama3 (the file keeps the factors, not the parameters they came from)
The frequencies depend on the configuration alone, so they are computed once, in float64, when a step is traced.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike
from jaxtyping import Float, Int

from bitjax.errors import ConfigError
from bitjax.nn.quant import at_least_f32

ROPE_SCALINGS = ("none", "linear", "llama3", "yarn", "freq_factors")


@dataclasses.dataclass(frozen=True)
class RopeScaling:
    """How RoPE's frequencies are scaled (`model.rope_scaling.*`); the fields a kind does not name are unused."""

    kind: Literal["none", "linear", "llama3", "yarn", "freq_factors"] = "none"
    factor: float = 1.0               # linear, llama3, yarn: how much longer the context is than the original
    original_max_len: int = 0         # llama3, yarn: the context the model was pretrained at
    low_freq_factor: float = 1.0      # llama3
    high_freq_factor: float = 4.0     # llama3
    beta_fast: float = 32.0           # yarn
    beta_slow: float = 1.0            # yarn
    attention_factor: float = 0.0     # yarn: the cos/sin multiplier; 0 means 0.1 ln(factor) + 1
    freq_factors: tuple[float, ...] = ()   # freq_factors: one divisor per rotary pair (head_dim / 2 of them)

    def __post_init__(self):
        object.__setattr__(self, "freq_factors", tuple(float(f) for f in self.freq_factors))
        if self.kind not in ROPE_SCALINGS:
            raise ConfigError(f"model.rope_scaling.kind={self.kind!r}; use one of {', '.join(ROPE_SCALINGS)}")
        if not 0 < self.factor < math.inf:
            raise ConfigError(f"model.rope_scaling.factor={self.factor} must be a positive finite number")
        if self.kind in ("llama3", "yarn") and self.original_max_len <= 0:
            raise ConfigError(f"model.rope_scaling.kind={self.kind!r} needs model.rope_scaling.original_max_len "
                              "(the context length the model was pretrained at)")
        if self.kind == "llama3" and not 0 < self.low_freq_factor < self.high_freq_factor:
            raise ConfigError(f"model.rope_scaling: llama3 needs 0 < low_freq_factor < high_freq_factor, got "
                              f"{self.low_freq_factor} and {self.high_freq_factor}")
        if (self.kind == "freq_factors") != bool(self.freq_factors):
            raise ConfigError("model.rope_scaling.freq_factors is given exactly when model.rope_scaling.kind="
                              f"'freq_factors' (kind {self.kind!r}, {len(self.freq_factors)} factors)")
        if any(not 0 < f < math.inf for f in self.freq_factors):
            raise ConfigError("model.rope_scaling.freq_factors must all be positive finite numbers")

    def check_head_dim(self, head_dim: int) -> None:
        if self.kind == "freq_factors" and len(self.freq_factors) != head_dim // 2:
            raise ConfigError(f"model.rope_scaling.freq_factors holds {len(self.freq_factors)} factors; "
                              f"model.head_dim={head_dim} has {head_dim // 2} rotary pairs")


def inverse_frequencies(head_dim: int, theta: float, scaling: RopeScaling = RopeScaling()) -> np.ndarray:
    """(head_dim / 2,) float64: the angle per position of each rotary pair, scaled as `scaling` says."""
    half = head_dim // 2
    inv_freq = 1.0 / theta ** (np.arange(half, dtype=np.float64) * 2 / head_dim)
    if scaling.kind == "linear":
        return inv_freq / scaling.factor
    if scaling.kind == "freq_factors":
        return inv_freq / np.asarray(scaling.freq_factors, np.float64)
    if scaling.kind == "llama3":
        return _llama3(inv_freq, scaling)
    if scaling.kind == "yarn":
        return _yarn(inv_freq, head_dim, theta, scaling)
    return inv_freq


def attention_factor(scaling: RopeScaling) -> float:
    """What cos and sin are multiplied by: 1, except under YaRN."""
    if scaling.kind != "yarn":
        return 1.0
    if scaling.attention_factor:
        return scaling.attention_factor
    return 1.0 if scaling.factor <= 1 else 0.1 * math.log(scaling.factor) + 1.0


def llama3_freq_factors(head_dim: int, theta: float, scaling: RopeScaling) -> np.ndarray:
    """llama3's scaling as one divisor per rotary pair: what llama.cpp reads from a `rope_freqs` tensor."""
    plain = inverse_frequencies(head_dim, theta)
    return plain / inverse_frequencies(head_dim, theta, scaling)


def _llama3(inv_freq: np.ndarray, s: RopeScaling) -> np.ndarray:
    low_freq_wavelen = s.original_max_len / s.low_freq_factor
    high_freq_wavelen = s.original_max_len / s.high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = np.where(wavelen > low_freq_wavelen, inv_freq / s.factor, inv_freq)
    smooth = (s.original_max_len / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor)
    blended = (1 - smooth) * scaled / s.factor + smooth * scaled
    medium = (wavelen >= high_freq_wavelen) & (wavelen <= low_freq_wavelen)
    return np.where(medium, blended, scaled)


def _yarn(inv_freq: np.ndarray, head_dim: int, theta: float, s: RopeScaling) -> np.ndarray:
    def correction_dim(rotations: float) -> float:   # the dimension that turns `rotations` times over the context
        return head_dim * math.log(s.original_max_len / (rotations * 2 * math.pi)) / (2 * math.log(theta))

    low = max(math.floor(correction_dim(s.beta_fast)), 0)
    high = min(math.ceil(correction_dim(s.beta_slow)), head_dim - 1)
    if low == high:
        high += 0.001   # as transformers does: a ramp of one dimension
    ramp = np.clip((np.arange(head_dim // 2, dtype=np.float64) - low) / (high - low), 0, 1)
    extrapolated = 1 - ramp
    return inv_freq / s.factor * (1 - extrapolated) + inv_freq * extrapolated


def rope(x_BLNH: Float[ArrayLike, "B L N H"], positions_BL: Int[ArrayLike, "B L"], theta: float,
         scaling: RopeScaling = RopeScaling()) -> Float[ArrayLike, "B L N H"]:
    """Rotary position embedding, half-split ("NEOX") convention as in Hugging Face LLaMA and llama.cpp bitnet."""
    half = x_BLNH.shape[-1] // 2
    acc = at_least_f32(x_BLNH.dtype)
    inv_freq_H = jnp.asarray(inverse_frequencies(x_BLNH.shape[-1], theta, scaling), acc)
    angles_BLH = positions_BL[..., None].astype(acc) * inv_freq_H[None, None, :]
    sin_BL1H, cos_BL1H = jnp.sin(angles_BLH)[:, :, None, :], jnp.cos(angles_BLH)[:, :, None, :]
    if (factor := attention_factor(scaling)) != 1.0:
        sin_BL1H, cos_BL1H = sin_BL1H * factor, cos_BL1H * factor
    x1, x2 = x_BLNH[..., :half].astype(acc), x_BLNH[..., half:].astype(acc)
    out = jnp.concatenate([x1 * cos_BL1H - x2 * sin_BL1H, x2 * cos_BL1H + x1 * sin_BL1H], axis=-1)
    return out.astype(x_BLNH.dtype)
