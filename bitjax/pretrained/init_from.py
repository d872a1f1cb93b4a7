"""A student's first parameters from a pretrained model (`init_from` in a recipe): BitDistill's conversion.

    init_from = "gguf:smollm2" | "gguf:PATH" | "hf:DIR" | "hf:ORG/NAME[@REVISION]" (bitjax.pretrained.spec)

The source is imported in full precision (bitjax.pretrained, bitjax.pretrained.gguf) and copied tensor by
tensor into the student. The student keeps its own architecture: where it has SubLN norms the source lacks
(a LLaMA or Qwen2 converted to the BitNet block), they are inserted with unit scales; every other tensor must
exist in the source with the same shape, so a student of another shape or vocabulary is a one-line error.
Its linears then train as BitLinear; with `quant_warmup_steps` the quantization is ramped in from lambda 0
(the full-precision network) to 1, as BitDistill and the HF 1.58-bit fine-tuning recipe do.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from bitjax.errors import ConfigError
from bitjax.nn import layer_stack, rope
from bitjax.nn.model_config import ModelConfig
from bitjax.pretrained import spec as model_spec

# Settings that change what the copied tensors compute without changing any tensor's shape: a student that
# differs from its source in one of them would start from a silently different network.
SAME_AS_SOURCE = ("n_heads", "n_kv_heads", "head_dim", "rope_theta", "norm_eps", "ffn_activation",
                  "attention_bias", "tie_embeddings", "qk_norm", "rope_scaling")


def student_config(source: ModelConfig, *, sub_norms: bool, **changes) -> ModelConfig:
    """The ternary student of a source model: its shape and function (SAME_AS_SOURCE), with BitNet's SubLN
    inserted or not (`sub_norms`; without it the student keeps the source's architecture and exports in it,
    bitjax.export.architectures), and any other `changes` (dtype, remat, full-precision blocks, ...). The int8
    matmul is off: a converted student ramps its quantization strength, which that path holds at 1."""
    if source.sub_norms and not sub_norms:
        raise ConfigError("the source has SubLN norms (a BitNet model); its student keeps them (sub_norms=True)")
    return dataclasses.replace(source, **{"quant": "ternary", "sub_norms": sub_norms, "int8_matmul": False,
                                          **changes})


def load_source(spec: str) -> tuple[ModelConfig, dict[str, np.ndarray]]:
    """The source model's config and {parameter path: float32 array}."""
    cfg, params = model_spec.load(model_spec.parse(spec, "init_from"))
    return cfg, layer_stack.flat_per_layer(params)


def _same_rope_scaling(source: ModelConfig, student: ModelConfig) -> bool:
    """The same scaling of the source's RoPE angles (its head width and theta, which are compared on their own):
    Llama 3.x's scaling read from a GGUF (per-pair factors) equals it from config.json."""
    if len(student.rope_scaling.freq_factors) not in (0, source.head_dim // 2):
        return False
    angles = [rope.inverse_frequencies(source.head_dim, source.rope_theta, c.rope_scaling) for c in (source, student)]
    return (np.allclose(*angles, rtol=1e-6, atol=0)
            and rope.attention_factor(source.rope_scaling) == rope.attention_factor(student.rope_scaling))


def _settings(name: str, config: ModelConfig) -> str:
    """`model.NAME=VALUE` as --set takes it (the RoPE scaling's fields one by one)."""
    if name != "rope_scaling":
        return f"model.{name}={getattr(config, name)!r}"
    scaling = config.rope_scaling
    return " ".join(f"model.rope_scaling.{f.name}={getattr(scaling, f.name)!r}" for f in dataclasses.fields(scaling)
                    if f.name != "freq_factors" and getattr(scaling, f.name) != f.default)


def _check_same_function(spec: str, source: ModelConfig, student: ModelConfig) -> None:
    def differs(name):
        a, b = getattr(source, name), getattr(student, name)
        if name == "rope_scaling":
            return not _same_rope_scaling(source, student)
        return not np.isclose(a, b, rtol=1e-6, atol=0) if isinstance(a, float) else a != b   # GGUF floats are f32

    if wrong := [name for name in SAME_AS_SOURCE if differs(name)]:
        raise ConfigError(f"init_from={spec}: the student's " + ", ".join(
            f"{n}={getattr(student, n)!r}" for n in wrong) + " differ from the source's; set " + " ".join(
            _settings(n, source) for n in wrong))


def student_params(spec: str, student_abstract_params, student: ModelConfig):
    """The student's parameter tree filled from the source named by `spec` (inserted SubLN scales are ones)."""
    source_cfg, source = load_source(spec)
    if source_cfg.vocab_size != student.vocab_size:
        raise ConfigError(f"init_from={spec}: the source has a vocabulary of {source_cfg.vocab_size} tokens, the "
                          f"student {student.vocab_size}; use the source's tokenizer (data.tokenizer) and "
                          f"model.vocab_size={source_cfg.vocab_size}")

    _check_same_function(spec, source_cfg, student)

    def fill(name, leaf):
        if name not in source:
            if name.endswith(("attn_sub_norm.scale", "ffn_sub_norm.scale")) and not source_cfg.sub_norms:
                return jnp.ones(leaf.shape, leaf.dtype)        # SubLN inserted into a model without it
            raise ConfigError(f"init_from={spec}: the source has no tensor for the student's {name}; give the "
                              "student the source's architecture (layers, heads, biases, tied head)")
        if source[name].shape != tuple(leaf.shape):
            raise ConfigError(f"init_from={spec}: {name} is {source[name].shape} in the source and "
                              f"{tuple(leaf.shape)} in the student; give the student the source's shape")
        return jnp.asarray(source[name], leaf.dtype)

    return layer_stack.map_per_layer(fill, student_abstract_params)
