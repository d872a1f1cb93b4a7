import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bitjax.errors import ConfigError
from bitjax.nn.layers import BitLinear, Linear
from bitjax.nn.model_config import ModelConfig
from bitjax.nn.transformer import Transformer, count_params
from tests.support import TINY

CFG = ModelConfig.tiny(vocab_size=64, n_layers=2)


@pytest.fixture(scope="module")
def model():
    return Transformer(CFG, rngs=nnx.Rngs(0))


def test_logits_shape_and_dtype(model):
    logits = model(jnp.zeros((2, 12), jnp.int32))
    assert logits.shape == (2, 12, CFG.vocab_size) and logits.dtype == jnp.float32


def test_causality(model):
    tokens = jax.random.randint(jax.random.key(0), (1, 16), 0, CFG.vocab_size)
    base = model(tokens)
    for t in (3, 9, 15):
        changed = tokens.at[0, t].set((tokens[0, t] + 1) % CFG.vocab_size)
        out = model(changed)
        np.testing.assert_array_equal(out[0, :t], base[0, :t])
        assert not np.allclose(out[0, t:], base[0, t:])


@pytest.fixture
def model_f64():
    """The ternary model in float64: packed and alone sum in other orders, and in float32 such a difference
    can move an int8 activation across a rounding boundary (a 5e-3 logit change on some CPUs); in float64 it
    cannot, so the logits must agree to float64 precision."""
    jax.config.update("jax_enable_x64", True)
    yield Transformer(dataclasses.replace(CFG, dtype="float64"), rngs=nnx.Rngs(0))
    jax.config.update("jax_enable_x64", False)


def test_segments_are_isolated(model, model_f64):
    """Two documents packed in one row give the logits each would give alone."""
    a = jax.random.randint(jax.random.key(1), (1, 7), 0, CFG.vocab_size)
    b = jax.random.randint(jax.random.key(2), (1, 9), 0, CFG.vocab_size)
    packed = jnp.concatenate([a, b], axis=1)
    segment_ids = jnp.array([[1] * 7 + [2] * 9])
    positions = jnp.array([list(range(7)) + list(range(9))])
    out64 = model_f64(packed, segment_ids, positions)
    np.testing.assert_allclose(out64[:, :7], model_f64(a), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(out64[:, 7:], model_f64(b), rtol=1e-12, atol=1e-12)
    out = model(packed, segment_ids, positions)
    # changing document a never changes document b's logits
    other_a = (a + 5) % CFG.vocab_size
    out2 = model(jnp.concatenate([other_a, b], axis=1), segment_ids, positions)
    np.testing.assert_array_equal(out2[:, 7:], out[:, 7:])


def test_bitnet_2b4t_parameter_count_without_allocation():
    t0 = time.perf_counter()
    counts = count_params(ModelConfig.bitnet_2b4t())
    assert time.perf_counter() - t0 < 60  # shapes only; allocating 9.6 GB of float32 would not be this quick
    assert counts["embedding"] == 128256 * 2560                       # tied input/output embedding
    # per layer: q (2560x2560), k, v (2560x640 each), o (2560x2560), gate, up (2560x6912 each), down
    # (6912x2560), two RMSNorms of 2560, and the sub-norms before o (2560) and down (6912); 30 layers; final norm
    per_layer = 2 * 2560 * 2560 + 2 * 2560 * 640 + 3 * 2560 * 6912 + 2 * 2560 + 2560 + 6912
    assert counts["non_embedding"] == 30 * per_layer + 2560
    assert counts["total"] == 2_412_820_480


def test_2b4t_shape_matches_published_config():
    c = ModelConfig.bitnet_2b4t()
    assert (c.d_model, c.d_ff, c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim, c.vocab_size) == \
        (2560, 6912, 30, 20, 5, 128, 128256)
    assert c.ffn_activation == "relu2" and c.rope_theta == 500_000.0 and c.norm_eps == 1e-5


def test_full_precision_model_has_same_parameters_as_ternary():
    tern = nnx.state(Transformer(CFG, rngs=nnx.Rngs(0)), nnx.Param)
    full_model = Transformer(dataclasses.replace(CFG, quant="none"), rngs=nnx.Rngs(0))
    full = nnx.state(full_model, nnx.Param)
    assert jax.tree.structure(tern) == jax.tree.structure(full)
    kinds = {type(m) for _, m in nnx.iter_graph(full_model) if isinstance(m, Linear)}
    assert kinds == {Linear}


def test_every_projection_is_bitlinear_and_embedding_is_not(model):
    linears = [m for _, m in nnx.iter_graph(model) if isinstance(m, Linear)]
    # the blocks are stacked: one module per projection, its kernel holding every layer
    assert len(linears) == 7 and all(isinstance(m, BitLinear) for m in linears)
    assert all(m.kernel[...].shape[0] == CFG.n_layers and m.kernel[...].ndim == 3 for m in linears)
    assert not isinstance(model.embed_tokens, Linear)


def test_invalid_config_is_rejected():
    with pytest.raises(ValueError, match="n_kv_heads"):
        ModelConfig.tiny(n_heads=4, n_kv_heads=3)


def test_full_precision_layers_compute_the_unquantized_block():
    """Every block in model.full_precision_layers: the ternary model equals the full-precision one exactly (weights
    and activations unquantized); one block of two: it differs from both, and the trainer's gradual lambda
    leaves that block at 0."""
    from bitjax.config import apply_overrides, load_recipe
    from bitjax.nn.layers import QuantStrength
    from bitjax.nn.transformer import quant_strengths

    cfg = dataclasses.replace(CFG, int8_matmul=False)
    tokens = jax.random.randint(jax.random.key(3), (2, 12), 0, CFG.vocab_size)
    params = nnx.state(Transformer(cfg, rngs=nnx.Rngs(0)), nnx.Param)

    def logits(**kw):
        graphdef, _, quant = nnx.split(Transformer(dataclasses.replace(cfg, **kw), rngs=nnx.Rngs(0)), nnx.Param,
                                       QuantStrength)
        return np.asarray(nnx.merge(graphdef, params, quant)(tokens))

    full = logits(quant="none")
    np.testing.assert_array_equal(logits(full_precision_layers=(0, 1)), full)
    first_only, ternary = logits(full_precision_layers=(0,)), logits()
    assert not np.allclose(first_only, full, atol=1e-3) and not np.allclose(first_only, ternary, atol=1e-3)
    _, _, quant = nnx.split(Transformer(dataclasses.replace(cfg, full_precision_layers=(1,)), rngs=nnx.Rngs(0)),
                            nnx.Param, QuantStrength)
    strengths = quant_strengths(dataclasses.replace(cfg, full_precision_layers=(1,)), quant, 0.25)
    assert {tuple(np.asarray(v).tolist()) for v in jax.tree.leaves(strengths)} == {(0.25, 0.0)}
    tiny = TINY
    set_ = apply_overrides(load_recipe(tiny), ["model.int8_matmul=false", "model.full_precision_layers=0,3"])
    assert set_.model.full_precision_layers == (0, 3)


def test_full_precision_layers_are_checked_in_one_line():
    with pytest.raises(ConfigError, match=r"full_precision_layers=\(0, 2\): give distinct block indices in 0..1"):
        ModelConfig.tiny(n_layers=2, int8_matmul=False, full_precision_layers=(0, 2))
    with pytest.raises(ConfigError, match=r"full_precision_layers=\(0,\) with model.int8_matmul=True: .* set "
                                          "model.int8_matmul=false"):
        ModelConfig.tiny(n_layers=2, int8_matmul=True, full_precision_layers=(0,))
