"""Hugging Face checkpoints (a local directory: config.json + safetensors) as bitjax models.

    model = hf_model("path/to/SmolLM2-135M")               # a bitjax Transformer: tokens (B, L) -> logits
    cfg, params = load_hf("path/to/SmolLM2-135M")          # its ModelConfig and float32 parameters (nnx.State)

Supported: the LLaMA family (`llama` including Llama 3.x's RoPE scaling, `mistral` without a sliding window),
`qwen2` (q/k/v biases), `qwen3` (per-head q/k RMSNorm, explicit head_dim) and `bitnet` (BitNetForCausalLM:
relu2, SubLN norms). The architecture becomes ModelConfig fields (sub norms, biases, q/k norms, a tied or
untied head, RoPE theta and scaling, norm eps, activation), always with `quant="none"`: the imported model
computes what transformers computes. Anything the decoder does not implement (other RoPE scalings, sliding
windows, mixtures of experts, MLP biases) is a one-line ConfigError naming the field, never a silently
different model.
Nothing is downloaded and no code from the directory is run: config.json is JSON, weights are safetensors.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors import safe_open

from bitjax.errors import ConfigError
from bitjax.nn import layer_stack
from bitjax.nn.layers import QuantStrength
from bitjax.nn.model_config import ModelConfig
from bitjax.nn.rope import RopeScaling
from bitjax.nn.transformer import Transformer, quant_strengths

ARCHITECTURES = {   # model_type -> the ModelConfig fields that architecture fixes
    "llama": dict(sub_norms=False, ffn_activation="silu"),
    "mistral": dict(sub_norms=False, ffn_activation="silu"),
    "qwen2": dict(sub_norms=False, ffn_activation="silu", attention_bias=True),
    "qwen3": dict(sub_norms=False, ffn_activation="silu", qk_norm=True),
    "bitnet": dict(sub_norms=True, ffn_activation="relu2"),
}
ACTIVATIONS = {"silu": "silu", "relu2": "relu2"}
# config.json's RoPE types -> what bitjax.nn.rope computes for them
ROPE_TYPES = {"default": "none", "linear": "linear", "llama3": "llama3", "yarn": "yarn"}


def hf_model_config(model_dir: str | Path) -> ModelConfig:
    """The ModelConfig of a Hugging Face model directory's config.json (full precision)."""
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise ConfigError(f"{path} does not exist; pass a Hugging Face model directory (config.json + safetensors)")
    try:
        hf = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path} is not JSON ({e.msg} at line {e.lineno})") from None
    model_type = hf.get("model_type")
    if hf.get("num_experts") or hf.get("num_local_experts") or str(model_type).endswith("_moe"):
        raise ConfigError(f"{path}: model_type {model_type!r} is a mixture of experts; bitjax's decoder is dense, "
                          f"import a dense model ({', '.join(ARCHITECTURES)})")
    if model_type not in ARCHITECTURES:
        raise ConfigError(f"{path}: model_type {model_type!r} is not supported; bitjax imports "
                          f"{', '.join(ARCHITECTURES)}")
    arch = dict(ARCHITECTURES[model_type])
    act = hf.get("hidden_act", "silu")
    if ACTIVATIONS.get(act) != arch["ffn_activation"]:
        raise ConfigError(f"{path}: hidden_act {act!r} is not supported for {model_type} (expected "
                          f"{arch['ffn_activation']!r})")
    rope_theta, rope_scaling = _rope(hf, path)
    sliding = hf.get("sliding_window") and hf.get("use_sliding_window", model_type == "mistral")
    if sliding or "sliding_attention" in (hf.get("layer_types") or ()):
        raise ConfigError(f"{path}: sliding-window attention (sliding_window={hf.get('sliding_window')}) is not "
                          "implemented; bitjax attends to the whole context: import a checkpoint with "
                          "use_sliding_window=false")
    if hf.get("mlp_bias"):
        raise ConfigError(f"{path}: mlp_bias=true is not supported (bitjax's MLP has no biases)")
    if model_type in ("llama", "qwen3") and hf.get("attention_bias"):
        arch["attention_bias"] = True
    heads = hf["num_attention_heads"]
    return ModelConfig(
        vocab_size=hf["vocab_size"], d_model=hf["hidden_size"], n_layers=hf["num_hidden_layers"], n_heads=heads,
        n_kv_heads=hf.get("num_key_value_heads") or heads,
        head_dim=hf.get("head_dim") or hf["hidden_size"] // heads, d_ff=hf["intermediate_size"],
        max_seq_len=hf.get("max_position_embeddings", 2048), rope_theta=rope_theta, rope_scaling=rope_scaling,
        norm_eps=float(hf.get("rms_norm_eps", 1e-6)), tie_embeddings=bool(hf.get("tie_word_embeddings", True)),
        quant="none", **arch)


def _rope(hf: dict, path: Path) -> tuple[float, RopeScaling]:
    """RoPE's base and scaling from either spelling transformers writes: `rope_theta` and `rope_scaling` up to
    v4, one `rope_parameters` dict (theta and scaling together) from v5. A scaling bitjax does not compute is
    refused: a scaled model imported without its scaling computes something else."""
    params = hf.get("rope_parameters") or {}
    scaling = hf.get("rope_scaling") or params
    theta = float(params.get("rope_theta", hf.get("rope_theta", 10_000.0)))
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind not in ROPE_TYPES:
        raise ConfigError(f"{path}: RoPE scaling {kind!r} is not supported; bitjax computes "
                          f"{', '.join(k for k in ROPE_TYPES if k != 'default')} scaling (or none): import a model "
                          "with one of those")
    rotary = params.get("partial_rotary_factor", hf.get("partial_rotary_factor", 1.0))
    if rotary != 1.0:
        raise ConfigError(f"{path}: partial_rotary_factor={rotary} is not supported; bitjax rotates whole heads")
    if kind == "default":
        return theta, RopeScaling()
    original = (scaling.get("original_max_position_embeddings") or hf.get("original_max_position_embeddings")
                or hf.get("max_position_embeddings", 0))
    fields = dict(kind=ROPE_TYPES[kind], factor=float(scaling.get("factor") or 1.0), original_max_len=int(original))
    if kind == "llama3":
        fields.update(low_freq_factor=float(scaling["low_freq_factor"]),
                      high_freq_factor=float(scaling["high_freq_factor"]))
    if kind == "yarn":
        if scaling.get("truncate", True) is False:
            raise ConfigError(f"{path}: yarn with truncate=false is not supported; bitjax truncates the "
                              "correction range as YaRN's default does")
        if not scaling.get("factor"):   # DeepSeek-V3 style: the ratio of the two context lengths
            fields["factor"] = hf["max_position_embeddings"] / original
        mscale, mscale_all_dim = scaling.get("mscale"), scaling.get("mscale_all_dim")
        attention = scaling.get("attention_factor")
        if attention is None and mscale and mscale_all_dim:
            attention = _yarn_mscale(fields["factor"], mscale) / _yarn_mscale(fields["factor"], mscale_all_dim)
        fields.update(beta_fast=float(scaling.get("beta_fast") or 32.0),
                      beta_slow=float(scaling.get("beta_slow") or 1.0), attention_factor=float(attention or 0.0))
    try:
        return theta, RopeScaling(**fields)
    except ConfigError as e:
        raise ConfigError(f"{path}: {kind} RoPE scaling: {e}") from None


def _yarn_mscale(factor: float, mscale: float) -> float:
    return 1.0 if factor <= 1 else 0.1 * mscale * math.log(factor) + 1.0


def hf_tensors(model_dir: str | Path) -> dict[str, np.ndarray]:
    """Every tensor of the directory's safetensors files (one file or a sharded index), as float32 numpy."""
    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        raise ConfigError(f"{model_dir} holds no .safetensors file; save the model with safe_serialization")
    tensors = {}
    for file in files:
        with safe_open(str(file), framework="numpy") as f:
            for name in f.keys():
                tensors[name] = f.get_tensor(name).astype(np.float32)
    return tensors


def _hf_name(name: str) -> str:
    """bitjax parameter path -> Hugging Face tensor name."""
    if name == "embed_tokens.embedding":
        return "model.embed_tokens.weight"
    if name == "lm_head.kernel":
        return "lm_head.weight"
    return "model." + name.replace(".scale", ".weight").replace(".kernel", ".weight")


def _abstract_params(cfg: ModelConfig):
    abstract = nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0)))
    return nnx.split(abstract, nnx.Param, QuantStrength)


def fill_params(cfg: ModelConfig, tensors: dict[str, np.ndarray], where: str) -> nnx.State:
    """The model's parameters from {bitjax parameter path: array}, every shape checked against `cfg`."""
    _, abstract_params, _ = _abstract_params(cfg)

    def fill(name, leaf):
        if name not in tensors:
            raise ConfigError(f"{where}: no tensor for {name}; the checkpoint does not match the architecture "
                              "its config describes")
        if tensors[name].shape != tuple(leaf.shape):
            raise ConfigError(f"{where}: the tensor for {name} has shape {tensors[name].shape}, the config "
                              f"implies {tuple(leaf.shape)}")
        return jnp.asarray(tensors[name], leaf.dtype)

    return layer_stack.map_per_layer(fill, abstract_params)


def merged_model(cfg: ModelConfig, params: nnx.State) -> Transformer:
    """A callable Transformer of `cfg` holding `params`."""
    graphdef, _, quant_vars = _abstract_params(cfg)
    return nnx.merge(graphdef, params, quant_strengths(cfg, quant_vars))


def load_hf(model_dir: str | Path, cfg: ModelConfig | None = None) -> tuple[ModelConfig, nnx.State]:
    """The directory's ModelConfig and its parameters, checked tensor by tensor against the config's shapes."""
    cfg = cfg or hf_model_config(model_dir)
    tensors = hf_tensors(model_dir)
    _, abstract_params, _ = _abstract_params(cfg)
    ours = {}
    for name, leaf in layer_stack.per_layer_shapes(abstract_params).items():
        hf_name = _hf_name(name)
        if hf_name not in tensors:
            raise ConfigError(f"{model_dir}: tensor {hf_name} is missing; the checkpoint does not match its "
                              "config.json")
        value = tensors[hf_name].T if name.endswith(".kernel") else tensors[hf_name]   # HF stores (out, in)
        if value.shape != tuple(leaf.shape):
            raise ConfigError(f"{model_dir}: tensor {hf_name} has shape {tensors[hf_name].shape}, config.json "
                              f"implies {tuple(leaf.shape[::-1]) if name.endswith('.kernel') else tuple(leaf.shape)}")
        ours[name] = value
    # A tied model may also store lm_head.weight (a copy of the embedding); rotary caches are not weights.
    used = {_hf_name(n) for n in ours} | {"lm_head.weight"}
    left = sorted(n for n in set(tensors) - used if not n.endswith("rotary_emb.inv_freq"))
    if left:
        raise ConfigError(f"{model_dir}: tensors {', '.join(left[:3])}{' ...' if len(left) > 3 else ''} have no "
                          "place in the model config.json describes")
    return cfg, fill_params(cfg, ours, str(model_dir))


def hf_model(model_dir: str | Path) -> Transformer:
    """The imported model, ready to call: tokens (B, L) -> logits (B, L, V)."""
    return merged_model(*load_hf(model_dir))
