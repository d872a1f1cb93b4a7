"""What an exporter writes: a trained run's ternary codes and scales, full-precision tensors and tokenizer.

`TernaryModel.from_run(Run(RUN_DIR))` reads a run's latest checkpoint; `TernaryModel.from_params` ternarizes every
BitLinear kernel with `bitjax.nn.quant.ternary_codes`, the quantizer the training forward pass uses, so an
export can never drift from training.

Names are bitjax module paths: `embed_tokens`, `norm`, `lm_head` (an untied head), `layers.N.input_layernorm`,
`layers.N.self_attn.q_proj`, ..., `layers.N.self_attn.q_norm` (Qwen3), `layers.N.mlp.ffn_sub_norm` (SubLN). The
linears of `model.full_precision_layers` are not ternarized: they are dense tensors, written as plain weights
by both formats. q/k/v biases (Qwen2) stay full precision in `biases`. Which runtime architecture the model is
written as (bitnet, or the source's own llama, qwen2, qwen3) is `bitjax.export.architectures`'.
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
    """Module paths of every RMSNorm the model has: the block norms, SubLN and q/k norms where present, the final."""
    names = []
    for i in range(cfg.n_layers):
        names += [f"layers.{i}.input_layernorm", f"layers.{i}.post_attention_layernorm"]
        names += [f"layers.{i}.self_attn.attn_sub_norm", f"layers.{i}.mlp.ffn_sub_norm"] if cfg.sub_norms else []
        names += [f"layers.{i}.self_attn.q_norm", f"layers.{i}.self_attn.k_norm"] if cfg.qk_norm else []
    return names + ["norm"]


def bias_names(cfg: ModelConfig) -> list[str]:
    """Module paths of the linears with a bias (q/k/v under model.attention_bias)."""
    if not cfg.attention_bias:
        return []
    return [f"layers.{i}.self_attn.{p}" for i in range(cfg.n_layers) for p in ("q_proj", "k_proj", "v_proj")]


@dataclasses.dataclass(frozen=True)
class TernaryTensor:
    codes_OI: np.ndarray   # int8 in {-1, 0, 1}, (out_features, in_features): runtime (row = output) order
    scale: np.float32      # absmean `1 / s`: the layer computes x @ (codes * scale).T


@dataclasses.dataclass(frozen=True)
class TernaryModel:
    config: ModelConfig
    dense: dict[str, np.ndarray]          # float32: embed_tokens (V, D), an untied lm_head (V, D), every RMSNorm
                                          # scale, and the linears of full-precision blocks as (out, in)
    ternary: dict[str, TernaryTensor]     # every BitLinear, by module path
    tokenizer_path: Path | None = None
    step: int | None = None
    name: str = "bitjax"
    biases: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)   # float32 (out,), by module path
    warnings: tuple[str, ...] = ()        # said in the model card (and a GGUF's description), e.g. an early export

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
        ternary = {}
        for name in ternary_names(cfg):
            codes_IO, scale = quant.ternary_codes(flat_params[f"{name}.kernel"])
            ternary[name] = TernaryTensor(np.asarray(codes_IO, np.int8).T.copy(), np.float32(scale))
        dense = {"embed_tokens": np.asarray(flat_params["embed_tokens.embedding"], np.float32)}
        for name in norm_names(cfg):
            dense[name] = np.asarray(flat_params[f"{name}.scale"], np.float32)
        for name in full_precision_names(cfg) + (["lm_head"] if not cfg.tie_embeddings else []):
            # runtime (row = output) order, like the ternary codes
            dense[name] = np.ascontiguousarray(np.asarray(flat_params[f"{name}.kernel"], np.float32).T)
        biases = {name: np.asarray(flat_params[f"{name}.bias"], np.float32) for name in bias_names(cfg)}
        return cls(cfg, dense, ternary, biases=biases, **kw)


def flatten_params(params) -> dict[str, np.ndarray]:
    """nnx.State -> {"layers.0.self_attn.q_proj.kernel": array, ...}: the per-layer view of the stacked blocks."""
    return layer_stack.flat_per_layer(params)


def load_run(run_dir: str | Path) -> Run:
    """A run directory's latest checkpoint (parameters restored on first use; see bitjax.run)."""
    return Run(run_dir)
