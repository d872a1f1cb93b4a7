import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bitjax.nn import quant


def test_ternarize_hand_computed():
    w = jnp.array([[0.5, -1.0], [0.02, 2.0]], jnp.float32)
    # mean|W| = 3.52 / 4 = 0.88, s = 1/0.88; W*s = [0.568, -1.136, 0.023, 2.273] -> round -> clip
    codes, scale = quant.ternary_codes(w)
    np.testing.assert_array_equal(codes, [[1, -1], [0, 1]])
    np.testing.assert_allclose(scale, 0.88, rtol=1e-6)
    np.testing.assert_allclose(quant.ternarize(w), [[0.88, -0.88], [0.0, 0.88]], rtol=1e-6)


def test_ternarize_zero_tensor_uses_eps():
    w = jnp.zeros((3, 3))
    np.testing.assert_allclose(quant.weight_quant_scale(w), 1e5, rtol=1e-6)
    np.testing.assert_array_equal(quant.ternarize(w), np.zeros((3, 3)))


def test_weights_are_exactly_ternary_times_one_scale():
    w = jax.random.normal(jax.random.key(0), (64, 96)) * 0.3
    wq = np.asarray(quant.ternarize(w))
    codes, scale = quant.ternary_codes(w)
    assert set(np.unique(np.asarray(codes))) <= {-1, 0, 1}
    assert set(np.unique(np.abs(wq))) <= {0.0, np.float32(1.0 / quant.weight_quant_scale(w))}
    np.testing.assert_array_equal(wq, np.asarray(codes, np.float32) / np.asarray(quant.weight_quant_scale(w)))
    np.testing.assert_allclose(scale, np.mean(np.abs(np.asarray(w))), rtol=1e-6)


def test_activation_quant_hand_computed():
    x = jnp.array([[1.0, -0.5, 0.25, 2.0]], jnp.float32)
    # s = 127 / 2 = 63.5; x*s = [63.5, -31.75, 15.875, 127] -> round half to even -> [64, -32, 16, 127]
    expected = np.array([[64, -32, 16, 127]], np.float32) / 63.5
    np.testing.assert_allclose(quant.quantize_activations(x), expected, rtol=1e-6)


def test_activation_codes_hand_computed():
    x = jnp.array([[1.0, -0.5, 0.25, 2.0], [0.0, 0.0, 0.0, 0.0]], jnp.float32)
    codes, scale = quant.activation_codes(x)
    assert codes.dtype == jnp.int8
    np.testing.assert_array_equal(codes, [[64, -32, 16, 127], [0, 0, 0, 0]])   # as in the test above
    np.testing.assert_allclose(scale, [[2.0 / 127], [1e-5 / 127]], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(codes, np.float32) * scale, quant.quantize_activations(x), rtol=1e-6)


def test_activations_lie_on_int8_grid_per_token():
    x = jax.random.normal(jax.random.key(1), (4, 7, 32)) * jnp.arange(1, 8)[None, :, None]
    xq = np.asarray(quant.quantize_activations(x), np.float64)
    s = np.asarray(quant.activation_scale(x), np.float64)
    k = xq * s
    np.testing.assert_allclose(k, np.round(k), atol=1e-3)
    codes = np.round(k)
    assert codes.min() >= -128 and codes.max() <= 127
    # the largest |x| of each token maps to +-127
    np.testing.assert_allclose(np.max(np.abs(np.round(k)), axis=-1), 127)


def test_ste_forward_is_quantized_backward_is_identity():
    x = jnp.linspace(-1, 1, 11)
    f = lambda v: jnp.sum(quant.ste(v, quant.ternarize(v)) * jnp.arange(11.0))
    np.testing.assert_allclose(quant.ste(x, quant.ternarize(x)), quant.ternarize(x))
    np.testing.assert_allclose(jax.grad(f)(x), jnp.arange(11.0))


@pytest.mark.parametrize("step,warmup,expected", [(0, 1000, 0.0), (250, 1000, 0.25), (5000, 1000, 1.0),
                                                   (0, 0, 1.0)])
def test_lambda_schedule(step, warmup, expected):
    assert float(quant.lambda_schedule(step, warmup)) == pytest.approx(expected)


def test_gradual_strength_interpolates():
    x = jnp.linspace(-1, 1, 7)
    xq = quant.ternarize(x)
    np.testing.assert_allclose(quant.ste(x, xq, 0.0), x)
    np.testing.assert_allclose(quant.ste(x, xq, 0.5), (x + xq) / 2, rtol=1e-6)
