import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bitjax.losses import divergences, reference, terms

B, L, V = 2, 5, 11


def _logits(seed, scale=2.0):
    return jax.random.normal(jax.random.key(seed), (B, L, V)) * scale


def _topk(teacher_logits, k):
    logp = jax.nn.log_softmax(teacher_logits, axis=-1)
    top_logp, ids = jax.lax.top_k(logp, k)
    rest = jnp.where(jax.nn.one_hot(ids, V).sum(-2) > 0, -jnp.inf, logp)
    return ids, top_logp, jax.nn.logsumexp(rest, axis=-1)


MASK = jnp.array([[1, 1, 1, 0, 1], [1, 0, 1, 1, 1]])


@pytest.mark.parametrize("kind", divergences.DIVERGENCES)
@pytest.mark.parametrize("tail", ["bucket", "renormalize"])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_sparse_equals_dense_when_k_is_vocab(kind, tail, temperature):
    student, teacher = _logits(0), _logits(1)
    ids, top_logp, tail_logp = _topk(teacher, V)
    sparse = reference.sparse_kd_loss(student, ids, top_logp, MASK, tail_logp, kind=kind, tail=tail,
                                    temperature=temperature)
    dense = reference.dense_kd_loss(student, teacher, MASK, kind=kind, temperature=temperature)
    np.testing.assert_allclose(sparse, dense, atol=1e-5, rtol=1e-5)
    # gradients are finite even though the tail bucket is empty
    grad = jax.grad(lambda s: reference.sparse_kd_loss(s, ids, top_logp, MASK, tail_logp, kind=kind,
                                                     tail=tail, temperature=temperature))(student)
    assert np.isfinite(np.asarray(grad)).all()


def test_tail_computed_from_topk_when_not_cached():
    student, teacher = _logits(0), _logits(1)
    ids, top_logp, tail_logp = _topk(teacher, 4)
    with_tail = reference.sparse_kd_loss(student, ids, top_logp, MASK, tail_logp)
    without = reference.sparse_kd_loss(student, ids, top_logp, MASK)
    np.testing.assert_allclose(with_tail, without, rtol=1e-5)


@pytest.mark.parametrize("kind", ["forward_kl", "reverse_kl", "jsd", "skew_kl", "skew_reverse_kl"])
def test_kl_family_nonnegative_and_zero_only_when_equal(kind):
    a = jax.nn.log_softmax(_logits(2), -1)
    b = jax.nn.log_softmax(_logits(3), -1)
    assert float(jnp.min(divergences.divergence(a, b, kind))) > 1e-4
    np.testing.assert_allclose(divergences.divergence(a, a, kind), 0.0, atol=1e-6)


def test_topk_bucket_kd_is_nonnegative_and_zero_at_teacher():
    teacher = _logits(1)
    ids, top_logp, tail_logp = _topk(teacher, 3)
    assert float(reference.sparse_kd_loss(_logits(5), ids, top_logp, MASK, tail_logp)) > 0
    np.testing.assert_allclose(reference.sparse_kd_loss(teacher, ids, top_logp, MASK, tail_logp), 0.0, atol=1e-6)


def test_redi_loss_and_gradient_hand_computed():
    # One pair, vocabulary 2, one completion token each; logits chosen so probabilities are simple.
    pos_logits = jnp.array([[[0.0, 0.0]]])                 # p(target 0) = 1/2
    neg_logits = jnp.array([[[jnp.log(3.0), 0.0]]])        # p(target 0) = 3/4
    targets, mask = jnp.array([[0]]), jnp.array([[1]])
    loss, aux = reference.redi_loss(pos_logits, targets, mask, neg_logits, targets, mask, alpha=0.8)
    expected = -np.log(0.5) + 0.8 * np.log(0.75)
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    # d/dz of -log softmax(z)_0 is softmax(z) - onehot(0); of alpha*log softmax(z)_0 it is alpha*(onehot - softmax)
    g_pos = jax.grad(lambda z: reference.redi_loss(z, targets, mask, neg_logits, targets, mask)[0])(pos_logits)
    g_neg = jax.grad(lambda z: reference.redi_loss(pos_logits, targets, mask, z, targets, mask)[0])(neg_logits)
    np.testing.assert_allclose(g_pos[0, 0], [0.5 - 1.0, 0.5], rtol=1e-6)
    np.testing.assert_allclose(g_neg[0, 0], [0.8 * (1 - 0.75), 0.8 * (0 - 0.25)], rtol=1e-6)


def test_redi_length_normalisation():
    logits = jnp.zeros((1, 4, 2))
    targets = jnp.zeros((1, 4), jnp.int32)
    short, long = jnp.array([[1, 0, 0, 0]]), jnp.array([[1, 1, 1, 1]])
    # per-token log-prob is log(1/2) either way, so the normalised loss does not depend on length
    a, _ = reference.redi_loss(logits, targets, short, logits, targets, long, alpha=0.8)
    np.testing.assert_allclose(a, -np.log(0.5) * (1 - 0.8), rtol=1e-6)


def test_completion_mask():
    mask = reference.completion_mask(jnp.array([2, 3]), jnp.array([5, 4]), 6)
    # row 0: tokens 0-1 prompt, 2-4 completion -> targets 1..3 are completion tokens
    np.testing.assert_array_equal(mask, [[0, 1, 1, 1, 0, 0], [0, 0, 1, 0, 0, 0]])


def test_kd_weight_schedule():
    assert float(terms.kd_weight(0, 0.9, 100)) == 0.0
    assert float(terms.kd_weight(50, 0.9, 100)) == pytest.approx(0.45)
    assert float(terms.kd_weight(500, 0.9, 100)) == pytest.approx(0.9)
    assert float(terms.kd_weight(0, 0.9)) == pytest.approx(0.9)


def test_jeffreys_is_forward_plus_reverse_kl_on_a_hand_computed_case():
    p, q = np.log(np.array([[[0.5, 0.5]]])), np.log(np.array([[[0.75, 0.25]]]))
    forward = 0.5 * np.log(0.5 / 0.75) + 0.5 * np.log(0.5 / 0.25)
    reverse = 0.75 * np.log(0.75 / 0.5) + 0.25 * np.log(0.25 / 0.5)
    got = float(divergences.divergence(jnp.asarray(p, jnp.float32), jnp.asarray(q, jnp.float32), "jeffreys")[0, 0])
    np.testing.assert_allclose(got, forward + reverse, rtol=1e-6)
    np.testing.assert_allclose(got, 0.2746530721670274, rtol=1e-6)
