"""What an exporter writes: a trained run's ternary codes and scales, full-precision tensors and tokenizer.

`load_run(RUN_DIR)` restores the latest Orbax checkpoint; `TernaryModel.from_params` ternarizes every
BitLinear kernel with `bitjax.quant.ternary_codes`, the quantizer the training forward pass uses, so an
export can never drift from training.

Names are bitjax module paths: `embed_tokens`, `norm`, `layers.N.input_layernorm`,
`layers.N.self_attn.q_proj`, ..., `layers.N.mlp.ffn_sub_norm`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import numpy as np

from bitjax import quant
from bitjax.config import TrainConfig, load_run_config
from bitjax.export.common import ExportError
from bitjax.model import ModelConfig

ATTENTION_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_PROJECTIONS = ("gate_proj", "up_proj", "down_proj")


def ternary_names(cfg: ModelConfig) -> list[str]:
    """Module paths of every BitLinear, in file order."""
    names = []
    for i in range(cfg.n_layers):
        names += [f"layers.{i}.self_attn.{p}" for p in ATTENTION_PROJECTIONS]
        names += [f"layers.{i}.mlp.{p}" for p in MLP_PROJECTIONS]
    return names


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
    dense: dict[str, np.ndarray]          # float32: embed_tokens (V, D) and every RMSNorm scale
    ternary: dict[str, TernaryTensor]     # every BitLinear, by module path
    tokenizer_path: Path | None = None
    step: int | None = None
    name: str = "bitjax"

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
        return cls(cfg, dense, ternary, **kw)


@dataclasses.dataclass(frozen=True)
class RunCheckpoint:
    """The latest checkpoint of a run directory: its config, latent parameters and tokenizer."""

    run_dir: Path
    train_config: TrainConfig
    step: int
    params: object                 # nnx.State of latent float32 parameters
    tokenizer_path: Path

    def flat_params(self) -> dict[str, np.ndarray]:
        return flatten_params(self.params)

    def ternary_model(self) -> TernaryModel:
        return TernaryModel.from_params(
            self.train_config.model, self.flat_params(), tokenizer_path=self.tokenizer_path, step=self.step,
            name=self.train_config.name)


def flatten_params(params) -> dict[str, np.ndarray]:
    """nnx.State -> {"layers.0.self_attn.q_proj.kernel": array, ...}."""
    flat = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        keys = [str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path]
        flat[".".join(k for k in keys if k != "value")] = np.asarray(leaf)
    return flat


def load_run(run_dir: str | Path) -> RunCheckpoint:
    """Restore the latest checkpoint of `run_dir` (a directory `bitjax train` wrote)."""
    from bitjax.checkpoint import Checkpointer
    from bitjax.train import Trainer

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ExportError(f"run directory {run_dir} does not exist; pass a directory written by `bitjax train`")
    cfg = load_run_config(run_dir)
    ckpt_dir = run_dir / "checkpoints"
    steps = [p for p in ckpt_dir.iterdir() if p.name.isdigit()] if ckpt_dir.is_dir() else []
    if not steps:
        raise ExportError(
            f"{run_dir} holds no checkpoint (nothing under {ckpt_dir}); train into it first: "
            f"bitjax train RECIPE --workdir {run_dir}")
    tokenizer_path = run_dir / "tokenizer.json"
    if not tokenizer_path.is_file():
        raise ExportError(
            f"{tokenizer_path} is missing; the exported model needs the run's tokenizer (rerun `bitjax train` "
            "with this --workdir to restore it)")
    ckpt = Checkpointer(ckpt_dir, cfg)
    try:
        step = ckpt.latest_step()
        trainer = Trainer.create(cfg)
        state = ckpt.restore_state(step, trainer.abstract_state())
    finally:
        ckpt.close()
    return RunCheckpoint(run_dir, cfg, int(step), state.params, tokenizer_path)
