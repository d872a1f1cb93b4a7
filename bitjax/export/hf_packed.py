"""Packed ternary checkpoints for transformers: BitNet's 2-bit layout in the student's own architecture.

transformers' BitNet quantizer (`quantization_config` quant_method "bitnet", `autobitlinear`, offline) turns
every nn.Linear of a model but its head into an `AutoBitLinear` that reads these packed weights, so the same
layout loads into `BitNetForCausalLM` (a student with SubLN), `LlamaForCausalLM`, `Qwen2ForCausalLM` or
`Qwen3ForCausalLM` (a student that kept its source's architecture; bitjax.export.architectures). A directory:
  model.safetensors      `model.<module path>.weight` uint8 (ceil(out/4), in), 2-bit packed (see packing.py),
                         `model.<module path>.weight_scale` float32 (1,) = mean(|W|) (autobitlinear offline);
                         `model.<module path>.bias` (qwen2) = bias / weight_scale, since AutoBitLinear adds
                         the bias before it multiplies by the scale; `model.embed_tokens.weight` (V, D), an
                         untied `lm_head.weight` (V, D) and every RMSNorm `.weight` in float32; the linears of
                         full-precision blocks as plain float32 (out, in) `.weight`s (and plain biases)
  config.json            the architecture's model_type and class, the shape, `hidden_act`, `rope_parameters`
                         (with its scaling), `quantization_config` (listing the full-precision blocks in
                         `modules_to_not_convert`)
  tokenizer.json         the run's tokenizer, and tokenizer_config.json naming its special tokens and chat template
  README.md              the model card (model_card.py): architecture, training, how to load it
export/FORMAT.md documents every byte.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from bitjax import tokenizer as tokenizer_lib
from bitjax.export import architectures, checks, model_card
from bitjax.export.common import ExportError, atomic_directory
from bitjax.export.model_source import TernaryModel
from bitjax.export.packing import pack_ternary, unpack_ternary
from bitjax.paths import user_path
from bitjax.tokenizer import CHAT_TEMPLATE

WEIGHTS_FILE = "model.safetensors"
QUANTIZATION_CONFIG = {"quant_method": "bitnet", "linear_class": "autobitlinear", "quantization_mode": "offline"}


def hf_name(module_path: str) -> str:
    """bitjax module path -> transformers parameter prefix (`layers.0.mlp.up_proj` -> `model.layers.0.mlp.up_proj`,
    `lm_head` -> `lm_head`)."""
    return module_path if module_path == "lm_head" else f"model.{module_path}"


HF_ROPE_TYPES = {"none": "default", "linear": "linear", "llama3": "llama3", "yarn": "yarn"}


def rope_parameters(cfg) -> dict:
    """config.json's `rope_parameters` (transformers 5): theta, and the scaling with the keys its type reads."""
    s = cfg.rope_scaling
    params = {"rope_type": HF_ROPE_TYPES[s.kind], "rope_theta": cfg.rope_theta}
    if s.kind in ("linear", "llama3", "yarn"):
        params["factor"] = s.factor
    if s.kind in ("llama3", "yarn"):
        params["original_max_position_embeddings"] = s.original_max_len
    if s.kind == "llama3":
        params.update(low_freq_factor=s.low_freq_factor, high_freq_factor=s.high_freq_factor)
    if s.kind == "yarn":
        params.update(beta_fast=s.beta_fast, beta_slow=s.beta_slow)
        if s.attention_factor:
            params["attention_factor"] = s.attention_factor
    return params


def quantization_config(model: TernaryModel) -> dict:
    """transformers' BitNet quantization config; the blocks of `model.full_precision_layers` (and the tied head,
    which transformers leaves alone only while the list is unset) in `modules_to_not_convert`: their linears
    stay `nn.Linear` with plain float weights."""
    layers = model.config.full_precision_layers
    if not layers:
        return dict(QUANTIZATION_CONFIG)
    return {**QUANTIZATION_CONFIG, "modules_to_not_convert": ["lm_head"] + [hf_name(f"layers.{i}") for i in
                                                                            sorted(layers)]}


def hf_config(model: TernaryModel, eos_id: int) -> dict:
    cfg, arch = model.config, architectures.architecture(model.config)
    config = {
        "architectures": [arch.hf_class],
        "model_type": arch.name,
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model,
        "intermediate_size": cfg.d_ff,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_kv_heads,
        "head_dim": cfg.head_dim,
        "hidden_act": cfg.ffn_activation,
        "max_position_embeddings": cfg.max_seq_len,
        "rms_norm_eps": cfg.norm_eps,
        "rope_parameters": rope_parameters(cfg),
        "tie_word_embeddings": cfg.tie_embeddings,
        "bos_token_id": eos_id,
        "eos_token_id": eos_id,
        "dtype": "float32",
        "quantization_config": quantization_config(model),
    }
    if arch is not architectures.QWEN2:   # Qwen2's q/k/v always have biases; elsewhere the flag adds them everywhere
        config["attention_bias"] = False
    if arch in (architectures.QWEN2, architectures.QWEN3):
        config["use_sliding_window"] = False
    return config


def stored_bias(model: TernaryModel, name: str) -> np.ndarray:
    """A bias as the file holds it: divided by the weight scale for an AutoBitLinear (which adds it before it
    scales), as it is for a full-precision linear."""
    bias = np.asarray(model.biases[name], np.float32)
    return bias / model.ternary[name].scale if name in model.ternary else bias


def packed_tensors(model: TernaryModel) -> dict[str, np.ndarray]:
    tensors = {f"{hf_name(n)}.weight": np.ascontiguousarray(a, np.float32) for n, a in model.dense.items()}
    for name, tensor in model.ternary.items():
        tensors[f"{hf_name(name)}.weight"] = pack_ternary(tensor.codes_OI)
        tensors[f"{hf_name(name)}.weight_scale"] = np.asarray([tensor.scale], np.float32)
    for name in model.biases:
        tensors[f"{hf_name(name)}.bias"] = stored_bias(model, name)
    return tensors


def write_packed(model: TernaryModel, out_dir: str | Path, *, force: bool = False,
                 allow_runtime_mismatch: bool = False, card: str | None = None) -> Path:
    """Write the packed directory under a temporary name, verify it, then move it into place.

    `card` is the README.md text (`model_card.render`); without one, a card without training facts."""
    out_dir = user_path(out_dir, "output")
    if held := architectures.packed_problems(model.config):
        raise ExportError(held[0])
    problems = checks.packed_problems(model)
    if problems and not allow_runtime_mismatch:
        raise ExportError(problems[0] + "; pass --allow-runtime-mismatch to write it anyway")
    if model.tokenizer_path is None:
        raise ExportError("the packed format needs the run's tokenizer.json; none was given")
    tok = tokenizer_lib.load(model.tokenizer_path)
    eos = tokenizer_lib.eos_id(tok)
    with atomic_directory(out_dir, force) as tmp:
        save_file(packed_tensors(model), str(tmp / WEIGHTS_FILE),
                  metadata={"format": "pt", "producer": "bitjax", "step": str(model.step)})
        os.chmod(tmp / WEIGHTS_FILE, 0o644)  # safetensors writes owner-only; the other files are 0644 too
        (tmp / "config.json").write_text(json.dumps(hf_config(model, eos), indent=2) + "\n")
        shutil.copyfile(model.tokenizer_path, tmp / "tokenizer.json")
        (tmp / "tokenizer_config.json").write_text(json.dumps({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": tokenizer_lib.eos_token(tok), "eos_token": tokenizer_lib.eos_token(tok),
            "add_bos_token": False, "add_eos_token": False,
            "model_max_length": model.config.max_seq_len,
            "chat_template": CHAT_TEMPLATE,
        }, indent=2) + "\n")
        (tmp / "README.md").write_text(card if card is not None else model_card.render(model, None))
        verify_packed(tmp, model)
    return out_dir


def read_packed(directory: str | Path) -> tuple[dict, dict[str, np.ndarray], dict[str, np.float32]]:
    """Read a packed directory back: (config.json, codes by module path (O, I) int8, scales by module path)."""
    directory = Path(directory)
    config = json.loads((directory / "config.json").read_text())
    tensors = load_file(str(directory / WEIGHTS_FILE))
    codes, scales = {}, {}
    for key, value in tensors.items():
        if key.endswith(".weight_scale"):
            module = key[len("model."):-len(".weight_scale")]
            packed = tensors[f"model.{module}.weight"]
            codes[module] = unpack_ternary(packed, out_features=4 * packed.shape[0])
            scales[module] = value
    return config, codes, scales


def verify_packed(directory: Path, model: TernaryModel) -> None:
    """Every unpacked code and scale must equal the training quantizer's; dense tensors bit-exact."""
    _, codes, scales = read_packed(directory)
    tensors = load_file(str(Path(directory) / WEIGHTS_FILE))
    if set(codes) != set(model.ternary):
        raise ExportError(f"{directory}: ternary tensors read back differ from the model's "
                          f"({sorted(set(codes) ^ set(model.ternary))[:4]})")
    for name, tensor in model.ternary.items():
        got = codes[name][:tensor.codes_OI.shape[0]]
        if not np.array_equal(got, tensor.codes_OI):
            bad = int(np.sum(got != tensor.codes_OI))
            raise ExportError(f"{directory}: {bad} codes of {name} read back differ from the quantizer's")
        if scales[name].shape != (1,) or scales[name][0] != tensor.scale:
            raise ExportError(f"{directory}: weight_scale of {name} reads back as {scales[name]}, not {tensor.scale}")
    for name, array in model.dense.items():
        if not np.array_equal(tensors[f"{hf_name(name)}.weight"], array):
            raise ExportError(f"{directory}: {hf_name(name)}.weight reads back different")
    for name in model.biases:
        if not np.array_equal(tensors.get(f"{hf_name(name)}.bias"), stored_bias(model, name)):
            raise ExportError(f"{directory}: {hf_name(name)}.bias reads back different")
