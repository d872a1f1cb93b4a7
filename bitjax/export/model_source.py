"""What an exporter writes: a trained run's ternary codes and scales, full-precision tensors and tokenizer.

`TernaryModel.from_run(Run(RUN_DIR))` reads a run's latest checkpoint; `TernaryModel.from_params` ternarizes every
BitLinear kernel with `bitjax.nn.quant.ternary_codes`, the quantizer the training forward pass uses, so an
export can never drift from training.

Names are bitjax module paths: `embed_tokens`, `norm`, `layers.N.input_layernorm`,
`layers.N.self_attn.q_proj`, ..., `layers.N.mlp.ffn_sub_norm`. The linears of `model.full_precision_layers` are
not ternarized: they are dense tensors, written as plain weights by both formats.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from bitjax.export.common import ExportError
from bitjax.nn import layer_stack, quant
from bitjax.nn.model_config import ModelConfig
from bitjax.run import Run

ATTENTION_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_PROJECTIONS = ("gate_proj", "up_proj", "down_proj")


def linear_names(cfg: ModelConfig, layers=None) -> list[str]:
    """Module paths of every block linear (of `layers` only, when given), in file order."""
    names = []
    for i in range(cfg.n_layers) if layers is None else layers:
        names += [f"layers.{i}.self_attn.{p}" for p in ATTENTION_PROJECTIONS]
        names += [f"layers.{i}.mlp.{p}" for p in MLP_PROJECTIONS]
    return names


def ternary_names(cfg: ModelConfig) -> list[str]:
    """Module paths of every ternary BitLinear (not in `model.full_precision_layers`), in file order."""
    return linear_names(cfg, [i for i in range(cfg.n_layers) if i not in cfg.full_precision_layers])


def full_precision_names(cfg: ModelConfig) -> list[str]:
    """Module paths of the linears of `model.full_precision_layers`: exported as plain weights."""
    return linear_names(cfg, sorted(cfg.full_precision_layers))


def norm_names(cfg: ModelConfig) -> list[str]:
    names = []
    for i in range(cfg.n_layers):
        names += [f"layers.{i}.input_layernorm", f"layers.{i}.self_attn.attn_sub_norm",
                  f"layers.{i}.post_attention_layernorm", f"layers.{i}.mlp.ffn_sub_norm"]
    return names + ["norm"]


@dataclasses.dataclass(frozen=True)
class TernaryTensor:
    codes_OI: np.ndarray   # int8 in {-1, 0, 1}, (out_features, in_features): runtime (row = output) order
    scale: np.float32      # absmean `1 / s`: the layer computes x @ (codes * scale).T


@dataclasses.dataclass(frozen=True)
class TernaryModel:
    config: ModelConfig
    dense: dict[str, np.ndarray]          # float32: embed_tokens (V, D), every RMSNorm scale, and the linears of
                                          # full-precision blocks as (out, in) (`full_precision_names`)
    ternary: dict[str, TernaryTensor]     # every BitLinear, by module path
    tokenizer_path: Path | None = None
    step: int | None = None
    name: str = "bitjax"

    @property
    def full_precision(self) -> list[str]:
        """The module paths of the linears kept in full precision (dense, not ternary)."""
        return full_precision_names(self.config)

    @classmethod
    def from_run(cls, run: Run) -> "TernaryModel":
        """The ternary model of a run's checkpoint."""
        return cls.from_params(run.config.model, run.flat_params(), tokenizer_path=run.tokenizer_path,
                               step=run.step, name=run.name)

    @classmethod
    def from_params(cls, cfg: ModelConfig, flat_params: dict[str, np.ndarray], **kw) -> "TernaryModel":
        """Ternarize flat latent parameters (`{module path}.kernel`, `.scale`, `embed_tokens.embedding`)."""
        if cfg.quant != "ternary":
            raise ExportError(
                f"model.quant={cfg.quant!r} is a full-precision model; the export formats hold ternary weights, "
                "train with model.quant=ternary")
        unsupported = [name for name, off in (("model.sub_norms=false", not cfg.sub_norms),
                                               ("model.attention_bias=true", cfg.attention_bias),
                                               ("model.tie_embeddings=false", not cfg.tie_embeddings)) if off]
        if unsupported:
            raise ExportError(
                f"{', '.join(unsupported)}: the BitNet layouts both runtimes read have SubLN norms, no biases and a "
                "tied head; convert the model to the BitNet architecture (sub_norms=true, no biases, tied head) first")
        ternary = {}
        for name in ternary_names(cfg):
            codes_IO, scale = quant.ternary_codes(flat_params[f"{name}.kernel"])
            ternary[name] = TernaryTensor(np.asarray(codes_IO, np.int8).T.copy(), np.float32(scale))
        dense = {"embed_tokens": np.asarray(flat_params["embed_tokens.embedding"], np.float32)}
        for name in norm_names(cfg):
            dense[name] = np.asarray(flat_params[f"{name}.scale"], np.float32)
        for name in full_precision_names(cfg):   # runtime (row = output) order, like the ternary codes
            dense[name] = np.ascontiguousarray(np.asarray(flat_params[f"{name}.kernel"], np.float32).T)
        return cls(cfg, dense, ternary, **kw)


def flatten_params(params) -> dict[str, np.ndarray]:
    """nnx.State -> {"layers.0.self_attn.q_proj.kernel": array, ...}: the per-layer view of the stacked blocks."""
    return layer_stack.flat_per_layer(params)


def load_run(run_dir: str | Path) -> Run:
    """A run directory's latest checkpoint (parameters restored on first use; see bitjax.run)."""
    return Run(run_dir)
