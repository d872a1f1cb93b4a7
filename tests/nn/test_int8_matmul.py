"""The int8 BitLinear matmul: exact on the quantized grid, straight-through gradients equal to the fake-quant path."""

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bitjax.config import TrainConfig, load_recipe
from bitjax.errors import ConfigError
from bitjax.nn import quant
from bitjax.nn.int8_matmul import MAX_EXACT_IN_FEATURES, int8_bitlinear
from bitjax.nn.layers import BitLinear
from bitjax.nn.model_config import PRESETS, ModelConfig
from bitjax.nn.transformer import Transformer
from bitjax.training import checkpointer as checkpoint
from bitjax.training import trainer as train_lib
from bitjax.training.trainer import Trainer
from tests.support import RECIPES


def _grid_kernel(key, shape, dtype):
    """Normal weights on a 2^-10 grid: sum |W| is exact in any order, so mean(|W|) is the same in numpy and XLA."""
    wide = quant.at_least_f32(dtype)
    return (jnp.round(jax.random.normal(key, shape, wide) * 1024) / 1024).astype(dtype)


def _input(key, shape, dtype):
    x = jax.random.normal(key, shape, quant.at_least_f32(dtype))
    return x.at[0, 0].set(0.0).astype(dtype)   # an all-zero row: the activation eps branch


def _pair(d_in, d_out, dtype, param_dtype, use_bias=False):
    """The same layer twice: fake-quantized (today's path) and int8."""
    kw = dict(dtype=dtype, param_dtype=param_dtype, use_bias=use_bias, rngs=nnx.Rngs(0))
    fake, int8 = BitLinear(d_in, d_out, **kw), BitLinear(d_in, d_out, int8_matmul=True, **kw)
    kernel = _grid_kernel(jax.random.key(7), (d_in, d_out), param_dtype)
    fake.kernel[...], int8.kernel[...] = kernel, kernel
    if use_bias:
        bias = jax.random.normal(jax.random.key(8), (d_out,), param_dtype)
        fake.bias[...], int8.bias[...] = bias, bias
    return fake, int8


def _numpy_codes(x, w):
    """BitNet b1.58 codes and dequantization scales straight from the formulas, in numpy float64."""
    x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
    s_w = 1.0 / max(np.mean(np.abs(w)), 1e-5)
    s_x = 127.0 / np.maximum(np.max(np.abs(x), axis=-1, keepdims=True), 1e-5)
    codes_x = np.clip(np.round(x * s_x), -128, 127)
    codes_w = np.clip(np.round(w * s_w), -1, 1)
    return codes_x, 1.0 / s_x, codes_w, 1.0 / s_w


def test_forward_is_exact_on_the_quantized_grid_in_float64():
    """codes_x @ codes_W in float64 (exact integers), times the two scales: bitwise the int8 layer's output.

    The codes come from the formulas in numpy; the scales are the quantizer's (XLA may round `1 / s` one
    ulp apart from numpy, e.g. by taking the mean as a multiplication by 1 / n), checked to that ulp.
    """
    with jax.enable_x64(True):
        _, layer = _pair(96, 24, jnp.float64, jnp.float64)
        x = _input(jax.random.key(1), (3, 5, 96), jnp.float64)
        codes_x, scale_x, codes_w, scale_w = _numpy_codes(x, layer.kernel[...])
        assert np.max(np.abs(codes_x)) == 127 and set(np.unique(codes_w)) == {-1.0, 0.0, 1.0}
        quant_codes_x, quant_scale_x = quant.activation_codes(x)
        quant_codes_w, quant_scale_w = quant.ternary_codes(layer.kernel[...])
        np.testing.assert_array_equal(quant_codes_x, codes_x)
        np.testing.assert_array_equal(quant_codes_w, codes_w)
        np.testing.assert_allclose(quant_scale_x, scale_x, rtol=2.3e-16, atol=0)
        np.testing.assert_allclose(quant_scale_w, scale_w, rtol=2.3e-16, atol=0)
        expected = ((codes_x @ codes_w) * np.asarray(quant_scale_x)) * np.asarray(quant_scale_w)
        np.testing.assert_array_equal(np.asarray(layer(x)), expected)


def test_forward_matches_the_fake_quantized_layer_in_float64():
    """Same codes, so the two paths differ only by float rounding of the dequantized products (~1e-16)."""
    with jax.enable_x64(True):
        fake, int8 = _pair(96, 24, jnp.float64, jnp.float64, use_bias=True)
        x = _input(jax.random.key(1), (3, 5, 96), jnp.float64)
        np.testing.assert_allclose(int8(x), fake(x), rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("shape", [(3, 5, 96), (7, 96)])
def test_gradients_equal_the_straight_through_path_in_float64(shape):
    """dL/dx and dL/dkernel (and the bias) through the int8 custom VJP == through quant.ste at strength 1."""
    with jax.enable_x64(True):
        fake, int8 = _pair(96, 24, jnp.float64, jnp.float64, use_bias=True)
        x = _input(jax.random.key(1), shape, jnp.float64)
        target = jax.random.normal(jax.random.key(2), shape[:-1] + (24,), jnp.float64)

        def loss(layer, x):
            return jnp.sum(jnp.tanh(layer(x)) * target)

        (g_fake, dx_fake), (g_int8, dx_int8) = (nnx.grad(loss, argnums=(0, 1))(m, x) for m in (fake, int8))
        assert float(jnp.max(jnp.abs(dx_fake))) > 1e-2
        np.testing.assert_allclose(dx_int8, dx_fake, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(g_int8["kernel"][...], g_fake["kernel"][...], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(g_int8["bias"][...], g_fake["bias"][...], rtol=1e-12, atol=1e-12)


def test_bfloat16_against_float64_reference_and_the_fake_quantized_path():
    """bf16 compute dtype, float32 latent kernel; u = 2^-8 is bf16's unit roundoff (8 significant bits).

    Against the float64 value of the same codes and scales ("terms" = the sum of |products| of an output):
    the int8 forward sums exactly, rescales in float32 and rounds once to bf16 (<= u |y|); dX accumulates
    in float32 and rounds once (<= u |dX|); dW also rounds dY * scale_x to bf16 first and its sum once more, to
    the compute dtype its reduce-scatter moves (<= 2u terms).
    The fake-quantized path rounds x_q and W_q to bf16 (u each) and its output (u), so the paths differ by
    at most 4u terms (forward, dW) and 3u terms (dX, where only W_q and the output are rounded).
    """
    fake, int8 = _pair(256, 64, jnp.bfloat16, jnp.float32)
    x = _input(jax.random.key(1), (2, 8, 256), jnp.bfloat16)
    dy = jax.random.normal(jax.random.key(2), (2, 8, 64), jnp.bfloat16)
    codes_x, scale_x = (np.asarray(a, np.float64) for a in quant.activation_codes(x))
    codes_w, scale_w = (np.asarray(a, np.float64) for a in quant.ternary_codes(int8.kernel[...]))
    x_q, w_q = codes_x * scale_x, codes_w * scale_w
    dy64 = np.asarray(dy, np.float64)
    u, f32_sums = 2.0**-8, 1e-6   # f32_sums bounds float32 accumulation over these short sums

    y_terms = np.abs(x_q) @ np.abs(w_q)
    y = np.asarray(int8(x), np.float64)
    assert np.all(np.abs(y - x_q @ w_q) <= u * np.abs(x_q @ w_q) + f32_sums * y_terms)
    assert np.all(np.abs(y - np.asarray(fake(x), np.float64)) <= 4 * u * y_terms)

    def vjp(layer):
        graphdef, params, rest = nnx.split(layer, nnx.Param, ...)
        _, pullback = jax.vjp(lambda p, x: nnx.merge(graphdef, p, rest)(x), params, x)
        grad_params, dx = pullback(dy)
        return np.asarray(grad_params["kernel"][...], np.float64), np.asarray(dx, np.float64)

    dw, dx = vjp(int8)
    dx_exact, dw_exact = dy64 @ w_q.T, np.einsum("bld,blf->df", x_q, dy64)
    dx_terms = np.abs(dy64) @ np.abs(w_q).T
    dw_terms = np.einsum("bld,blf->df", np.abs(x_q), np.abs(dy64))
    assert np.all(np.abs(dx - dx_exact) <= u * np.abs(dx_exact) + f32_sums * dx_terms)
    assert np.all(np.abs(dw - dw_exact) <= (2 * u + f32_sums) * dw_terms)
    dw_fake, dx_fake = vjp(fake)
    assert np.all(np.abs(dx - dx_fake) <= 3 * u * dx_terms)
    assert np.all(np.abs(dw - dw_fake) <= 4 * u * dw_terms)
    assert np.max(np.abs(dw - dw_fake)) > 0   # the two paths really are different computations


def _s8_dots(hlo: str) -> list[str]:
    """Compiled-HLO dots whose result is s32 and whose two operands are s8 (looked up in their computation)."""
    found = []
    for computation in hlo.split("\n\n"):
        types = dict(re.findall(r"(%[\w.\-]+) = (\w+)\[", computation))
        for result, a, b in re.findall(r"= (\w+)\[[^\]]*\]\S* dot\((%[\w.\-]+), (%[\w.\-]+)\)", computation):
            if result == "s32" and types.get(a) == types.get(b) == "s8":
                found.append(computation)
    return found


def _compiled(layer, x):
    return jax.jit(lambda x: layer(x)).lower(x).compile().as_text()


def test_compiled_forward_has_an_s8_by_s8_to_s32_dot():
    fake, int8 = _pair(64, 32, jnp.float32, jnp.float32)
    x = jnp.ones((2, 5, 64), jnp.float32)
    assert _s8_dots(_compiled(int8, x))
    assert not _s8_dots(_compiled(fake, x))


def test_strength_below_one_and_weight_only_layers_keep_the_fake_quantized_path():
    fake, _ = _pair(64, 32, jnp.float32, jnp.float32)
    fake.quant_strength[...] = jnp.float32(0.5)
    x = jax.random.normal(jax.random.key(1), (2, 5, 64))
    kernel = fake.kernel[...]
    half_w = kernel + 0.5 * (quant.ternarize(kernel) - kernel)
    half_x = x + 0.5 * (quant.quantize_activations(x) - x)
    np.testing.assert_allclose(fake(x), half_x @ half_w, rtol=1e-5, atol=1e-6)
    assert not _s8_dots(_compiled(fake, x))
    weight_only = BitLinear(64, 32, quantize_activations=False, int8_matmul=True, rngs=nnx.Rngs(0))
    np.testing.assert_allclose(weight_only(x), x @ quant.ternarize(weight_only.kernel[...]), rtol=1e-5, atol=1e-6)
    assert not _s8_dots(_compiled(weight_only, x))


def test_every_preset_sums_exactly_in_float32():
    """|acc| <= 128 * in_features < 2^24 for the widest BitLinear input of every preset."""
    for make in PRESETS.values():
        cfg = make()
        assert 128 * max(cfg.d_model, cfg.n_heads * cfg.head_dim, cfg.d_ff) < 2**24
        assert max(cfg.d_model, cfg.n_heads * cfg.head_dim, cfg.d_ff) <= MAX_EXACT_IN_FEATURES


def test_plain_function_matches_layer():
    x = jax.random.normal(jax.random.key(1), (4, 64))
    _, int8 = _pair(64, 32, jnp.float32, jnp.float32)
    np.testing.assert_array_equal(int8_bitlinear(x, int8.kernel[...]), int8(x))


def _models(**kw):
    """A tiny Transformer twice from the same seed: fake-quantized and int8 BitLinears, identical parameters."""
    fake = Transformer(ModelConfig.tiny(vocab_size=64, n_layers=2, **kw), rngs=nnx.Rngs(0))
    int8 = Transformer(ModelConfig.tiny(vocab_size=64, n_layers=2, int8_matmul=True, **kw), rngs=nnx.Rngs(0))
    return fake, int8


def test_model_logits_and_cached_decoding_agree_in_float64():
    """Full forward and cached decoding (what eval, export checks and generation run): the same logits to
    1e-12, because every BitLinear sees the same codes and only the rescale rounds differently."""
    with jax.enable_x64(True):
        fake, int8 = _models(dtype="float64")
        for a, b in zip(jax.tree.leaves(nnx.state(fake, nnx.Param)), jax.tree.leaves(nnx.state(int8, nnx.Param))):
            np.testing.assert_array_equal(a, b)
        tokens_BL = jax.random.randint(jax.random.key(3), (2, 9), 1, 64)
        logits_fake, logits_int8 = fake(tokens_BL), int8(tokens_BL)
        assert logits_int8.dtype == jnp.float64
        np.testing.assert_allclose(logits_int8, logits_fake, rtol=1e-12, atol=1e-12)
        mask_B11LT = jnp.tril(jnp.ones((9, 12), bool))[None, None, None]
        positions_BL = jnp.broadcast_to(jnp.arange(9), (2, 9))
        step_fake, _ = fake.decode(tokens_BL, positions_BL, mask_B11LT, fake.empty_cache(2, 12), 0)
        step_int8, _ = int8.decode(tokens_BL, positions_BL, mask_B11LT, int8.empty_cache(2, 12), 0)
        np.testing.assert_allclose(step_int8, step_fake, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(step_int8, logits_int8[:, -1], rtol=1e-12, atol=1e-12)


def test_switch_is_validated_and_does_not_change_checkpoints(tmp_path):
    with pytest.raises(ConfigError, match="quant_warmup_steps=5"):
        TrainConfig(model=ModelConfig.tiny(int8_matmul=True), quant_warmup_steps=5)
    # a full-precision model has no BitLinear: the switch changes nothing there (recipes keep it on)
    none = Transformer(ModelConfig.tiny(int8_matmul=True, quant="none", n_layers=1), rngs=nnx.Rngs(0))
    assert not any(isinstance(m, BitLinear) for _, m in nnx.iter_graph(none))
    with pytest.raises(ConfigError, match="input width 200000"):
        ModelConfig.tiny(int8_matmul=True, d_ff=200_000)
    saved = checkpoint.meta_for(TrainConfig(model=ModelConfig.tiny()), "tok")
    checkpoint.check_compatible(saved, TrainConfig(model=ModelConfig.tiny(int8_matmul=True)), "tok", tmp_path)
    with pytest.raises(ConfigError, match="different model"):
        checkpoint.check_compatible(saved, TrainConfig(model=ModelConfig.tiny(d_ff=512)), "tok", tmp_path)


def test_trainer_step_lowers_to_int8_dots_only_with_the_switch():
    """The Trainer's loss forward has s8 x s8 -> s32 dots with int8_matmul, none with a quantization ramp."""
    def lowered(int8_matmul: bool, warmup: int, lam: float):
        cfg = TrainConfig(model=ModelConfig.tiny(vocab_size=64, n_layers=1, int8_matmul=int8_matmul),
                          quant_warmup_steps=warmup)
        trainer = Trainer.create(cfg)
        params = jax.eval_shape(trainer._init).params
        tokens = jax.ShapeDtypeStruct((2, 8), jnp.int32)
        return jax.jit(lambda p, t: trainer.model(p, lam)(t)).lower(params, tokens).as_text()

    int8_dot = re.compile(r"dot_general .*\(tensor<[\dx]+xi8>, tensor<[\dx]+xi8>\) -> tensor<[\dx]+xi32>")
    assert len(int8_dot.findall(lowered(int8_matmul=True, warmup=0, lam=1.0))) == 7   # 7 BitLinears per block
    assert not int8_dot.findall(lowered(int8_matmul=False, warmup=10, lam=0.5))


def test_accelerator_recipes_choose_the_int8_matmul():
    """The recipes that train from scratch at strength 1 on accelerators run int8; the ramped one cannot."""
    recipes = RECIPES
    for name in ("bitnet_125m", "bitnet_125m_silu", "bitnet_700m", "bitnet_700m_silu", "bitnet_2b4t"):
        cfg = load_recipe(recipes / f"{name}.py")
        assert cfg.model.int8_matmul and cfg.quant_warmup_steps == 0, name
    assert not load_recipe(recipes / "smollm2_ternary.py").model.int8_matmul


def _kernel_rounds(jaxpr) -> int:
    """round() ops on kernel-shaped arrays, (in, out) or stacked (layers, in, out), in a jaxpr and every jaxpr
    nested in it (scan, remat, custom VJP). Activations here are (2, 8, width): their second axis is 8."""
    n = 0
    for eqn in jaxpr.eqns:
        shape = eqn.outvars[0].aval.shape if eqn.outvars else ()
        n += eqn.primitive.name == "round" and (len(shape) == 2 or (len(shape) == 3 and shape[1] > 8))
        for value in eqn.params.values():
            for sub in value if isinstance(value, (list, tuple)) else [value]:
                if isinstance(sub, (jax.extend.core.ClosedJaxpr, jax.extend.core.Jaxpr)):
                    n += _kernel_rounds(getattr(sub, "jaxpr", sub))
    return n


@pytest.mark.parametrize("once", [True, False])
def test_trainer_ternarizes_each_kernel_once_per_step_even_under_remat(once, monkeypatch):
    """With remat, per-call ternarization runs twice per kernel (forward and the backward's recompute);
    the Trainer's `ternarize_once` makes it once, outside the rematerialised blocks."""
    if not once:
        monkeypatch.setattr(train_lib, "ternarize_once", lambda model, plan=None: None)
    cfg = TrainConfig(model=ModelConfig.tiny(vocab_size=64, n_layers=2, int8_matmul=True, remat=True))
    trainer = Trainer.create(cfg)
    params = jax.eval_shape(trainer._init).params
    grad = jax.grad(lambda p, t: jnp.sum(trainer.model(p)(t)))
    jaxpr = jax.make_jaxpr(grad)(params, jnp.zeros((2, 8), jnp.int32)).jaxpr
    # the blocks are stacked: each of the 7 kernels is one (n_layers, in, out) array and the scanned body
    # appears once in the jaxpr, forward and (under remat) recomputed in the backward
    assert _kernel_rounds(jaxpr) == 7 * (1 if once else 2)


def test_ternarized_once_model_gives_the_same_logits_and_gradients():
    """Trainer.model (kernels ternarized ahead) against the layers computing their own codes, in float64."""
    with jax.enable_x64(True):
        cfg = TrainConfig(model=ModelConfig.tiny(vocab_size=64, n_layers=2, dtype="float64", int8_matmul=True))
        trainer = Trainer.create(cfg)
        params = trainer.init_state().params
        fake_cfg = dataclasses.replace(cfg.model, int8_matmul=False)
        graphdef_fake = nnx.graphdef(nnx.eval_shape(lambda: Transformer(fake_cfg, rngs=nnx.Rngs(0))))
        fake = lambda p: nnx.merge(graphdef_fake, p, trainer.quant_vars)   # noqa: E731
        tokens_BL = jax.random.randint(jax.random.key(3), (2, 9), 1, 64)
        target_BLV = jax.random.normal(jax.random.key(4), (2, 9, 64), jnp.float64)

        def loss(model):
            return jnp.sum(jnp.tanh(model(tokens_BL)) * target_BLV)

        grads_once = jax.grad(lambda p: loss(trainer.model(p)))(params)
        grads_fake = jax.grad(lambda p: loss(fake(p)))(params)
        for a, b in zip(jax.tree.leaves(grads_once), jax.tree.leaves(grads_fake)):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(trainer.model(params)(tokens_BL), fake(params)(tokens_BL), rtol=1e-12, atol=1e-12)
