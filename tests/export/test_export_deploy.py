"""The deployable recipes: SiLU-gated 125m and 700m variants export to GGUF; the relu2 originals are refused
with one line naming them."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bitjax.config import load_recipe
from bitjax.export import architectures, checks, llama_check
from bitjax.export import reference as ref
from bitjax.export.embedding_quant import check_embedding_type
from bitjax.export.gguf_writer import write_gguf
from bitjax.export.model_source import TernaryModel, flatten_params
from bitjax.export.runtime_report import format_agreement
from bitjax.nn.transformer import Transformer
from tests.support import RECIPES


@pytest.mark.parametrize("name", ["bitnet_125m", "bitnet_700m"])
def test_silu_variant_differs_only_in_activation_and_passes_gguf_checks(name):
    base, silu = load_recipe(RECIPES / f"{name}.py"), load_recipe(RECIPES / f"{name}_silu.py")
    assert base.model.ffn_activation == "relu2" and silu.model.ffn_activation == "silu"
    assert dataclasses.replace(silu, name=base.name, model=base.model) == base
    cfg = silu.model
    assert architectures.gguf_problems(cfg) == [] and checks.gguf_activation_problems(cfg) == []
    for width in (cfg.d_model, cfg.n_heads * cfg.head_dim, cfg.d_ff):  # every BitLinear's input width
        assert width % checks.TQ_BLOCK == 0
    check_embedding_type("q6_k", cfg.d_model)
    [problem] = checks.gguf_activation_problems(base.model)
    assert "\n" not in problem and f"recipes/{name}_silu.py" in problem


def _random_model(cfg, tokenizer_path):
    model = Transformer(cfg, rngs=nnx.Rngs(0))
    # A random head is nearly flat (logits ~ N(0, 0.5)); scaled up it has a clear argmax per position, as a
    # trained one has, so agreement figures measure the runtime and not ties.
    model.embed_tokens.embedding.value = model.embed_tokens.embedding.value * 10
    params = flatten_params(nnx.state(model, nnx.Param))
    return model, TernaryModel.from_params(cfg, params, tokenizer_path=tokenizer_path, step=0, name="silu-125m")


def _bitjax_logits(model, cfg, tokens_L):
    graph, state = nnx.split(Transformer(cfg, rngs=nnx.Rngs(0)))
    _, params = nnx.split(model)
    forward = jax.jit(lambda s, t: nnx.merge(graph, s)(t))   # parameters as arguments, not folded constants
    return np.asarray(forward(params, jnp.asarray(np.asarray(tokens_L, np.int32)[None])))[0]


@pytest.mark.slow
def test_silu_125m_exports_to_gguf_and_runs_in_llama_cpp(trained_run, tmp_path):
    """The bitnet_125m_silu shape (random weights: training it is too slow for a test) in llama.cpp.

    F32 weights against bitjax's W1.58A16 forward checks the graph exactly. The deployment file (TQ2_0,
    Q6_K embedding) must load, decode, and give logits close to the training forward (A8). On a random
    12-layer net activation rounding moves many argmaxes (bitjax's own A8 and A16 forwards agree on only
    92% of these positions, and perplexities near 1e10 turn tiny log-loss shifts into percent), so the
    bound is on the logits themselves: correlation with A8 (measured 0.996)."""
    cfg = dataclasses.replace(load_recipe(RECIPES / "bitnet_125m_silu.py").model, dtype="float32", remat=False)
    model, ternary = _random_model(cfg, trained_run / "tokenizer.json")
    tokens = np.random.default_rng(0).integers(0, 2048, size=64)

    exact = write_gguf(ternary, tmp_path / "silu125m-f32.gguf", "f32")
    llm = llama_check.open_model(exact, n_ctx=64)
    try:
        got = llama_check.llama_logits(llm, tokens)
    finally:
        llm.close()
    expected = _bitjax_logits(model, dataclasses.replace(cfg, quantize_activations=False), tokens)
    assert np.mean(got.argmax(-1) == expected.argmax(-1)) == 1.0
    assert np.abs(got - expected).max() < 0.05 * np.abs(expected).mean()   # measured 0.017 on logits ~4.4

    deploy = write_gguf(ternary, tmp_path / "silu125m.gguf", "tq2_0")
    llm = llama_check.open_model(deploy, n_ctx=80)
    try:
        got = llama_check.llama_logits(llm, tokens)
        greedy = llama_check.llama_greedy(llm, tokens[:8], 8)
    finally:
        llm.close()
    a8 = _bitjax_logits(model, cfg, tokens)
    agreement = ref.agreement(a8, got, tokens)
    print("\n" + format_agreement("silu 125m TQ2_0 + Q6_K vs bitjax A8", agreement))
    correlation = np.corrcoef(got.ravel(), a8.ravel())[0, 1]
    print(f"logit correlation {correlation:.4f}")
    assert correlation > 0.98
    assert len(greedy) == 8
