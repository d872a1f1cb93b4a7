"""The attention-relation loss (MiniLMv2, BitDistill stage 3) against a numpy float64 reference, and the one
block's q/k/v the model hands it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bitjax.errors import ConfigError
from bitjax.losses import relation as relation_loss
from bitjax.nn.attention import AttentionMask
from bitjax.nn.model_config import ModelConfig
from bitjax.nn.transformer import AttentionInputs, Transformer

B, L, HEADS = 2, 7, 2
SEGMENTS = np.array([[1, 1, 1, 2, 2, 2, 2], [1, 1, 1, 1, 1, 0, 0]], np.int32)   # two documents; padding (0)


@pytest.fixture
def x64():
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", False)


def _inputs(rng, n_heads, n_kv_heads, head_dim=4, scale=1.0):
    return AttentionInputs(scale * rng.standard_normal((B, L, n_heads, head_dim)),
                           scale * rng.standard_normal((B, L, n_kv_heads, head_dim)),
                           scale * rng.standard_normal((B, L, n_kv_heads, head_dim)))


def _visible():
    """(B, L, M): key m visible to query l (causal, same segment), written out position by position."""
    out = np.zeros((B, L, L), bool)
    for b in range(B):
        for q in range(L):
            for m in range(q + 1):
                out[b, q, m] = SEGMENTS[b, q] == SEGMENTS[b, m]
    return out


def _numpy_relation(a_BLW, heads):
    """Per head: softmax over visible keys of a_l . a_m / sqrt(d), and the scores' layout (B, R, L, M)."""
    d = a_BLW.shape[-1] // heads
    a = a_BLW.reshape(B, L, heads, d)
    probs = np.zeros((B, heads, L, L))
    visible = _visible()
    for b in range(B):
        for r in range(heads):
            for q in range(L):
                keys = np.flatnonzero(visible[b, q])
                s = np.array([a[b, q, r] @ a[b, m, r] for m in keys]) / np.sqrt(d)
                e = np.exp(s - s.max())
                probs[b, r, q, keys] = e / e.sum()
    return probs


def numpy_reference(student, teacher, heads):
    """Value (B, L) and gradient with respect to each student input, in float64 by hand: for one row,
    d KL(p_t || softmax(s)) / d s = p_s - p_t, and s = a a^T / sqrt(d) gives d a = (G + G^T) a / sqrt(d)."""
    value = np.zeros((B, L))
    grads = []
    for s_in, t_in in zip(student, teacher):
        a_s, a_t = s_in.reshape(B, L, -1), t_in.reshape(B, L, -1)
        p_s, p_t = _numpy_relation(a_s, heads), _numpy_relation(a_t, heads)
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(p_t > 0, p_t * (np.log(p_t) - np.log(p_s)), 0.0)
        value += terms.sum(-1).mean(1)
        d = a_s.shape[-1] // heads
        g_BRLM = (p_s - p_t) / heads                           # d (sum over B, L of value) / d scores
        a = a_s.reshape(B, L, heads, d)
        grad = np.einsum("brlm,bmrd->blrd", g_BRLM + g_BRLM.transpose(0, 1, 3, 2), a) / np.sqrt(d)
        grads.append(grad.reshape(s_in.shape))
    return value, grads


def test_value_and_gradient_match_the_numpy_reference(x64):
    """Student and teacher of different widths (4/2 heads vs 6/3 heads of 4), two documents and padding."""
    rng = np.random.default_rng(0)
    student, teacher = _inputs(rng, 4, 2), _inputs(rng, 6, 3, scale=1.5)
    want, want_grads = numpy_reference(student, teacher, HEADS)
    segments = jnp.asarray(SEGMENTS)
    got = relation_loss.relation_kl_per_token(jax.tree.map(jnp.asarray, student), jax.tree.map(jnp.asarray, teacher),
                                              segments, HEADS)
    assert got.dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-10, atol=1e-12)
    several = _visible().sum(-1) > 1    # a query that sees only itself has one relation, equal on both sides
    assert np.all(want[several] > 1e-3) and np.all(want[~several] == 0)
    grads = jax.grad(lambda s: jnp.sum(relation_loss.relation_kl_per_token(s, teacher, segments, HEADS)))(
        jax.tree.map(jnp.asarray, student))
    for got_g, want_g in zip(grads, want_grads):
        np.testing.assert_allclose(np.asarray(got_g), want_g, rtol=1e-9, atol=1e-12)
    teacher_grads = jax.grad(lambda t: jnp.sum(relation_loss.relation_kl_per_token(student, t, segments, HEADS)))(
        jax.tree.map(jnp.asarray, teacher))
    assert all(not np.any(np.asarray(g)) for g in teacher_grads)   # the teacher is a constant


def test_zero_when_student_equals_teacher_and_positive_otherwise():
    rng = np.random.default_rng(1)
    student = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), _inputs(rng, 4, 2))
    segments = jnp.asarray(SEGMENTS)
    assert float(jnp.max(jnp.abs(relation_loss.relation_kl_per_token(student, student, segments, HEADS)))) == 0.0
    other = jax.tree.map(lambda a: a * 1.1, student)
    several = _visible().sum(-1) > 1
    assert float(jnp.min(relation_loss.relation_kl_per_token(student, other, segments, HEADS)[several])) > 0


@pytest.mark.parametrize("layer", [0, 2, -1])
def test_the_model_returns_one_blocks_attention_inputs(layer):
    """`hidden_states_and_inputs` equals running the blocks one by one and reading the chosen block's q/k/v;
    the hidden states are unchanged."""
    cfg = ModelConfig.tiny(vocab_size=64, n_layers=3, d_model=64, n_heads=4, n_kv_heads=2, head_dim=16, d_ff=128,
                           int8_matmul=False)
    model = Transformer(cfg, rngs=nnx.Rngs(0))
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, 64, (B, L)), jnp.int32)
    positions = jnp.broadcast_to(jnp.arange(L, dtype=jnp.int32), (B, L))
    x_BLD, inputs = model.hidden_states_and_inputs(tokens, jnp.asarray(SEGMENTS), positions, layer)
    np.testing.assert_array_equal(np.asarray(x_BLD), np.asarray(model.hidden_states(tokens, jnp.asarray(SEGMENTS))))
    graphdef, state = nnx.split(model.layers)
    h = model.embed_tokens(tokens)
    mask = AttentionMask(segment_ids_BL=jnp.asarray(SEGMENTS))
    for i in range(cfg.n_layers):
        block = nnx.merge(graphdef, jax.tree.map(lambda a, i=i: a[i], state))
        if i == range(cfg.n_layers)[layer]:
            want = block.self_attn.inputs(block.input_layernorm(h), positions)
        h, _ = block(h, positions, mask)
    for got, expected in zip(inputs, want):
        np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-5, atol=1e-6)


def test_relation_heads_and_layer_are_checked_against_each_model():
    cfg = ModelConfig.tiny(n_heads=4, n_kv_heads=2, head_dim=64)   # query width 256, key/value width 128
    relation_loss.check_model(cfg, -1, 8, "student")
    with pytest.raises(ConfigError, match="relation_heads=3 does not divide the student's query width 256"):
        relation_loss.check_model(cfg, -1, 3, "student")
    with pytest.raises(ConfigError, match="relation_heads=256 does not divide the student's key/value width 128"):
        relation_loss.check_model(cfg, -1, 256, "student")
    with pytest.raises(ConfigError, match="relation_layer=4 is outside the student's 4 layers"):
        relation_loss.check_model(cfg, 4, 8, "student")
