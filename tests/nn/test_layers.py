import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bitjax.nn import quant
from bitjax.nn.layers import BitLinear, Linear, RMSNorm


def _layer_and_input():
    layer = BitLinear(16, 8, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(3), (2, 5, 16))
    return layer, x


def test_bitlinear_forward_equals_quantized_matmul():
    layer, x = _layer_and_input()
    expected = quant.quantize_activations(x) @ quant.ternarize(layer.kernel[...])
    np.testing.assert_allclose(layer(x), expected, rtol=1e-6, atol=1e-6)


def test_ste_gradient_wrt_latent_equals_gradient_wrt_quantized_weights():
    """dL/dW_latent through BitLinear == dL/dW_q of the plain matmul x_q @ W_q."""
    layer, x = _layer_and_input()
    target = jax.random.normal(jax.random.key(4), (2, 5, 8))
    loss_of_output = lambda y: jnp.sum(jnp.tanh(y) * target)

    graphdef, params, rest = nnx.split(layer, nnx.Param, ...)

    def through_layer(params):
        return loss_of_output(nnx.merge(graphdef, params, rest)(x))

    latent = layer.kernel[...]
    grad_latent = jax.grad(through_layer)(params)["kernel"][...]
    x_q, w_q = quant.quantize_activations(x), quant.ternarize(latent)
    matmul_loss = lambda w: loss_of_output(x_q @ w)
    grad_quantized = jax.grad(matmul_loss)(w_q)
    np.testing.assert_allclose(grad_latent, grad_quantized, rtol=1e-5, atol=1e-6)

    # and that matmul gradient is the true derivative: central finite differences on a few entries
    eps = 1e-2
    for i, j in [(0, 0), (3, 5), (15, 7)]:
        bump = jnp.zeros_like(w_q).at[i, j].set(eps)
        numeric = (matmul_loss(w_q + bump) - matmul_loss(w_q - bump)) / (2 * eps)
        np.testing.assert_allclose(grad_quantized[i, j], numeric, rtol=2e-2, atol=1e-3)


def test_activation_ste_gradient_wrt_input_equals_gradient_wrt_quantized_input():
    """dL/dx through BitLinear == dL/dx_q of the plain matmul x_q @ W_q at x_q = quantize_activations(x):
    the int8 absmax quantizer passes the gradient straight through (its round() alone would give 0)."""
    layer, x = _layer_and_input()
    target = jax.random.normal(jax.random.key(4), (2, 5, 8))
    loss_of_output = lambda y: jnp.sum(jnp.tanh(y) * target)
    grad_x = jax.grad(lambda x: loss_of_output(layer(x)))(x)
    x_q, w_q = quant.quantize_activations(x), quant.ternarize(layer.kernel[...])
    grad_x_q = jax.grad(lambda xq: loss_of_output(xq @ w_q))(x_q)
    np.testing.assert_allclose(grad_x, grad_x_q, rtol=1e-5, atol=1e-6)
    assert float(jnp.min(jnp.abs(grad_x))) > 0 or float(jnp.mean(jnp.abs(grad_x))) > 1e-2
    # without the straight-through path the quantizer's gradient is (nearly) zero: the check above can fail
    through_quantizer = jax.grad(lambda x: loss_of_output(quant.quantize_activations(x) @ w_q))(x)
    assert float(jnp.max(jnp.abs(through_quantizer - grad_x_q))) > 1e-2


def test_quant_strength_zero_is_full_precision():
    layer, x = _layer_and_input()
    layer.quant_strength[...] = jnp.float32(0.0)
    np.testing.assert_allclose(layer(x), x @ layer.kernel[...], rtol=1e-5, atol=1e-6)


def test_linear_and_bitlinear_share_parameter_layout():
    a, b = Linear(16, 8, rngs=nnx.Rngs(0)), BitLinear(16, 8, rngs=nnx.Rngs(0))
    sa, sb = nnx.state(a, nnx.Param), nnx.state(b, nnx.Param)
    assert jax.tree.structure(sa) == jax.tree.structure(sb)
    np.testing.assert_array_equal(sa["kernel"][...], sb["kernel"][...])


def test_weight_only_mode_skips_activation_quantization():
    layer = BitLinear(16, 8, quantize_activations=False, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(3), (2, 5, 16))
    np.testing.assert_allclose(layer(x), x @ quant.ternarize(layer.kernel[...]), rtol=1e-6, atol=1e-6)


def test_rmsnorm():
    norm = RMSNorm(4, eps=1e-5)
    x = jnp.array([[3.0, -4.0, 0.0, 0.0]])
    expected = x / jnp.sqrt(jnp.mean(x**2) + 1e-5)
    np.testing.assert_allclose(norm(x), expected, rtol=1e-6)
