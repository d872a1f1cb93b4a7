"""Every divergence and the sparse KD term against references written out in numpy, independently of
`bitjax.losses` (no shared helper, no shared T^2): exact values on two-outcome cases, and the top-k
teacher with its tail (both tail modes, T != 1, non-default beta and skew) at k < V."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bitjax.losses import divergences, reference, terms


def _kl(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.sum(np.where(a > 0, a * np.log(np.where(a > 0, a, 1.0) / b), 0.0)))


def numpy_divergence(kind, p, q, beta=0.5, skew=0.1):
    """The formulas of FACTS.md, p the teacher and q the student."""
    p, q = np.asarray(p, np.float64), np.asarray(q, np.float64)
    if kind == "forward_kl":
        return _kl(p, q)
    if kind == "reverse_kl":
        return _kl(q, p)
    if kind == "jsd":
        m = beta * p + (1 - beta) * q
        return beta * _kl(p, m) + (1 - beta) * _kl(q, m)
    if kind == "skew_kl":
        return _kl(p, skew * p + (1 - skew) * q)
    if kind == "skew_reverse_kl":
        return _kl(q, skew * q + (1 - skew) * p)
    if kind == "tvd":
        return 0.5 * float(np.sum(np.abs(p - q)))
    if kind == "jeffreys":
        return _kl(p, q) + _kl(q, p)
    raise AssertionError(kind)


# p = [.5, .5] (teacher), q = [.75, .25] (student): each value written out by hand.
_L2, _L3 = np.log(2.0), np.log(3.0)
HAND = {
    "forward_kl": 0.5 * np.log(0.5 / 0.75) + 0.5 * np.log(0.5 / 0.25),            # 0.1438410362
    "reverse_kl": 0.75 * np.log(0.75 / 0.5) + 0.25 * np.log(0.25 / 0.5),          # 0.1308120359
    # beta = 0.5: M = [.625, .375]
    "jsd": 0.5 * (0.5 * np.log(0.5 / 0.625) + 0.5 * np.log(0.5 / 0.375))
    + 0.5 * (0.75 * np.log(0.75 / 0.625) + 0.25 * np.log(0.25 / 0.375)),
    # skew 0.1: 0.1 p + 0.9 q = [.725, .275]
    "skew_kl": 0.5 * np.log(0.5 / 0.725) + 0.5 * np.log(0.5 / 0.275),
    # 0.1 q + 0.9 p = [.525, .475]
    "skew_reverse_kl": 0.75 * np.log(0.75 / 0.525) + 0.25 * np.log(0.25 / 0.475),
    "tvd": 0.25,
    "jeffreys": 0.5 * np.log(0.5 / 0.75) + 0.5 * np.log(0.5 / 0.25)
    + 0.75 * np.log(0.75 / 0.5) + 0.25 * np.log(0.25 / 0.5),
}


def _bitjax(kind, p, q, **kw):
    lp = jnp.log(jnp.asarray(p, jnp.float32))[None, None]
    lq = jnp.log(jnp.asarray(q, jnp.float32))[None, None]
    return float(divergences.divergence(lp, lq, kind, **kw)[0, 0])


def test_every_divergence_has_a_hand_computed_case():
    assert set(HAND) == set(divergences.DIVERGENCES)


@pytest.mark.parametrize("kind", divergences.DIVERGENCES)
def test_divergence_equals_the_hand_computed_value(kind):
    """p = [.5, .5] against q = [.75, .25]; forward and reverse KL differ here (0.1438 vs 0.1308)."""
    assert numpy_divergence(kind, [0.5, 0.5], [0.75, 0.25]) == pytest.approx(HAND[kind], rel=1e-12)
    assert _bitjax(kind, [0.5, 0.5], [0.75, 0.25]) == pytest.approx(HAND[kind], rel=1e-6)


def test_tvd_and_jsd_exact_values():
    """TVD of [1, 0] vs [0, 1] is 1; JSD(0.5) of disjoint distributions is log 2; of equal ones 0."""
    assert _bitjax("tvd", [1.0, 0.0], [0.0, 1.0]) == pytest.approx(1.0, abs=1e-7)
    assert _bitjax("jsd", [1.0, 0.0], [0.0, 1.0]) == pytest.approx(_L2, rel=1e-6)
    assert _bitjax("tvd", [0.2, 0.8], [0.2, 0.8]) == 0.0


@pytest.mark.parametrize("kind,kw", [("jsd", {"beta": 0.9}), ("jsd", {"beta": 0.1}), ("skew_kl", {"skew": 0.3}),
                                     ("skew_reverse_kl", {"skew": 0.7})])
def test_beta_and_skew_are_used(kind, kw):
    """Non-default beta / skew on a three-outcome case, against the numpy formula; and not the default."""
    p, q = [0.2, 0.5, 0.3], [0.6, 0.1, 0.3]
    want = numpy_divergence(kind, p, q, **kw)
    assert _bitjax(kind, p, q, **kw) == pytest.approx(want, rel=1e-5)
    assert abs(want - numpy_divergence(kind, p, q)) > 1e-3
    # jsd with beta: M = 0.9 p + 0.1 q written out once by hand
    if kw == {"beta": 0.9}:
        m = [0.24, 0.46, 0.3]
        hand = 0.9 * sum(a * np.log(a / c) for a, c in zip(p, m)) + 0.1 * sum(b * np.log(b / c) for b, c in zip(q, m))
        assert want == pytest.approx(hand, rel=1e-12)


@pytest.mark.parametrize("kind", divergences.DIVERGENCES)
def test_zero_only_when_equal_on_many_pairs(kind):
    """Positive on 20 random pairs (three outcomes), zero for equal ones, and equal to the reference."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        p, q = rng.dirichlet(np.ones(3)), rng.dirichlet(np.ones(3))
        got = _bitjax(kind, p, q)
        assert got > 0
        assert got == pytest.approx(numpy_divergence(kind, p, q), rel=1e-4, abs=1e-7)
        assert _bitjax(kind, p, p) == pytest.approx(0.0, abs=1e-6)


# --------------------------------------------------------------------------- sparse KD at k < V

def _softmax(z):
    z = np.asarray(z, np.float64)
    e = np.exp(z - z.max())
    return e / e.sum()


def sparse_reference(student_z, teacher_z, k, *, kind, tail, T, beta=0.5, skew=0.1):
    """One position, written out: the teacher known by its top k (at T = 1), the student exact."""
    p_full = _softmax(teacher_z)
    ids = np.argsort(-p_full)[:k]
    p_top = p_full[ids]
    q_full = _softmax(np.asarray(student_z, np.float64) / T)
    if tail == "bucket":
        outcomes = np.append(p_top, 1.0 - p_top.sum())            # k + 1 outcomes, then tempered
        p = outcomes ** (1.0 / T)
        p /= p.sum()
        q = np.append(q_full[ids], 1.0 - q_full[ids].sum())
    else:
        p = p_top ** (1.0 / T)
        p /= p.sum()
        q = q_full[ids] / q_full[ids].sum()
    return T * T * numpy_divergence(kind, p, q, beta=beta, skew=skew)


@pytest.mark.parametrize("kind", divergences.DIVERGENCES)
@pytest.mark.parametrize("tail", terms.TAIL_MODES)
@pytest.mark.parametrize("T,beta,skew", [(1.0, 0.5, 0.1), (2.0, 0.3, 0.25)])
def test_sparse_kd_at_k_below_vocab_matches_the_numpy_reference(kind, tail, T, beta, skew):
    """k = 3 of V = 9: the tail (bucket: one more outcome on both sides; renormalize: dropped) matters."""
    V, k = 9, 3
    rng = np.random.default_rng(1)
    student = rng.normal(size=(2, 3, V)) * 2
    teacher = rng.normal(size=(2, 3, V)) * 2
    logp = jax.nn.log_softmax(jnp.asarray(teacher, jnp.float32), axis=-1)
    top_logp, ids = jax.lax.top_k(logp, k)
    got = reference.sparse_kd_per_token(jnp.asarray(student, jnp.float32), ids, top_logp, kind=kind, tail=tail,
                                     temperature=T, beta=beta, skew=skew)
    want = np.array([[sparse_reference(student[b, i], teacher[b, i], k, kind=kind, tail=tail, T=T, beta=beta,
                                       skew=skew) for i in range(3)] for b in range(2)])
    np.testing.assert_allclose(np.asarray(got), want, rtol=2e-4, atol=1e-6)


def test_bucket_and_renormalize_differ_at_k_below_vocab():
    """At k < V the two tail modes give different losses in bitjax (the tail is not silently ignored)."""
    rng = np.random.default_rng(2)
    s = jnp.asarray(rng.normal(size=(1, 1, 9)) * 2, jnp.float32)
    top_logp, ids = jax.lax.top_k(jax.nn.log_softmax(jnp.asarray(rng.normal(size=(1, 1, 9)) * 2, jnp.float32)), 3)
    a = float(reference.sparse_kd_per_token(s, ids, top_logp, tail="bucket")[0, 0])
    b = float(reference.sparse_kd_per_token(s, ids, top_logp, tail="renormalize")[0, 0])
    assert abs(a - b) > 1e-3
