"""Every RoPE scaling an export architecture claims (bitjax.export.architectures), run in its runtime.

A random one-block student of each source architecture with each scaling it can hold, at a RoPE theta other
than the default and over 96 positions, more than the original context of 16, so the scaling decides the
angles: llama.cpp's F32 path (exact weights, unquantized activations) equals bitjax's W1.58A16 forward to
2e-3 of the largest logit (float32 rounding; the head is scaled 20x, logits reach about 12), and transformers
on the packed directory agrees with the training forward (every argmax without a near-tie, perplexity within
1%). Without the scaling the logits move far more: the test shows it can fail. Students with SubLN (bitnet)
hold no scaling and are refused (tests/pretrained/test_convert_architectures.py).
"""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bitjax.export import architectures, hf_check, llama_check
from bitjax.export import reference as ref
from bitjax.export.gguf_writer import write_gguf
from bitjax.export.hf_packed import write_packed
from bitjax.export.model_source import TernaryModel, flatten_params
from bitjax.nn.layers import QuantStrength
from bitjax.nn.model_config import ModelConfig
from bitjax.nn.rope import RopeScaling
from bitjax.nn.transformer import Transformer, quant_strengths

pytest.importorskip("llama_cpp")
pytest.importorskip("transformers")

SCALINGS = {"linear": RopeScaling("linear", factor=4.0),
            "yarn": RopeScaling("yarn", factor=4.0, original_max_len=16),
            "llama3": RopeScaling("llama3", factor=8.0, original_max_len=16)}
ARCHITECTURE = {"llama": {}, "qwen2": dict(attention_bias=True), "qwen3": dict(qk_norm=True, head_dim=128)}
CASES = [(a, s) for a in ARCHITECTURE for s in SCALINGS if s in architectures.ARCHITECTURES[a].gguf_rope]


def _logits(cfg, params, tokens, quantize_activations):
    cfg = dataclasses.replace(cfg, quantize_activations=quantize_activations)
    graphdef, _, quant_vars = nnx.split(nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0))), nnx.Param,
                                        QuantStrength)
    return np.asarray(nnx.merge(graphdef, params, quant_strengths(cfg, quant_vars))(jnp.asarray(tokens[None])))[0]


def _llama_cpp(path, tokens):
    llm = llama_check.open_model(path, n_ctx=len(tokens) + 8)
    try:
        return llama_check.llama_logits(llm, tokens)
    finally:
        llm.close()


@pytest.mark.parametrize("arch, scaling", CASES)
def test_each_rope_scaling_runs_in_llama_cpp_and_transformers(trained_run, tmp_path, arch, scaling):
    cfg = ModelConfig.tiny(vocab_size=2048, n_layers=1, sub_norms=False, rope_theta=50_000.0, tie_embeddings=False,
                           rope_scaling=SCALINGS[scaling], **ARCHITECTURE[arch])
    model = Transformer(cfg, rngs=nnx.Rngs(0))
    # a head 20x the init scale: a clear argmax at most positions, as a trained model has
    model.lm_head.kernel[...] = model.lm_head.kernel[...] * 20
    params = nnx.state(model, nnx.Param)
    ternary = TernaryModel.from_params(cfg, flatten_params(params), tokenizer_path=trained_run / "tokenizer.json",
                                       step=0)
    assert architectures.architecture(cfg).name == arch
    tokens = np.random.default_rng(0).integers(1, 2048, 96).astype(np.int32)
    a16, a8 = _logits(cfg, params, tokens, False), _logits(cfg, params, tokens, True)

    write_gguf(ternary, tmp_path / "m.gguf", "f32")
    f32 = _llama_cpp(tmp_path / "m.gguf", tokens)
    assert np.abs(f32 - a16).max() < 2e-3 * np.abs(a16).max()   # measured up to 9e-4 (qwen3, yarn)
    plain = _logits(dataclasses.replace(cfg, rope_scaling=RopeScaling()), params, tokens, False)
    assert np.abs(plain - a16).max() > 10 * np.abs(f32 - a16).max()   # the scaling decides these logits

    write_packed(ternary, tmp_path / "packed")
    figures = ref.agreement(a8, hf_check.hf_logits(hf_check.load_model(tmp_path / "packed"), tokens), tokens)
    assert figures["argmax_agreement_clear"] == 1.0 and figures["clear_positions"] >= 48
    assert figures["ppl_rel_diff"] <= 1e-2
