"""The chunked LM head and loss (bitjax.losses.chunked_head) against the logits-based reference
(bitjax.losses.reference), in float64: batch loss and its gradients with respect to the hidden states and the head
matrix, on mixed-source batches (KD rows random, peaked and padded, CE, SFT and REDI pair rows), every
divergence, both tail modes, T = 1 and T = 2; the tail guard; and no f32 (B, L, V) buffer in the step."""

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bitjax.config import SourceConfig, apply_overrides, load_recipe
from bitjax.losses import chunked_head, divergences, objectives, reference, terms
from tests.support import TINY

B, L, D, V, K = 6, 8, 5, 16, 4
SOURCES = (SourceConfig("text", "tfds:shakespeare"), SourceConfig("kd", "tfds:kjv", objective="kd"),
           SourceConfig("sft", "traces:x.jsonl", objective="sft"),
           SourceConfig("pairs", "traces:x.jsonl", objective="redi"))
TOL = dict(rtol=1e-9, atol=1e-9)


@pytest.fixture(autouse=True)
def float64():
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", previous)


def distill_config(**kw):
    cfg = load_recipe(TINY)
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, sources=SOURCES),
                               distill=dataclasses.replace(cfg.distill, cache="unused", kd_weight=0.7, **kw))


def _teacher_topk(rng, scale, k=K):
    z_LV = rng.normal(size=(L, V)) * scale
    logp_LV = z_LV - np.log(np.exp(z_LV).sum(-1, keepdims=True))
    ids_LK = np.argsort(-logp_LV, -1)[:, :k]
    top_LK = np.take_along_axis(logp_LV, ids_LK, -1)
    with np.errstate(divide="ignore", invalid="ignore"):   # k = V: the sum is 1 to rounding
        return ids_LK, top_LK, np.log1p(-np.exp(top_LK).sum(-1))


def mixed_batch(seed=0, k=K, pad=True):
    """Hidden states, head matrix and a batch: rows 0-2 KD (random; peaked; with `pad` the last 3 positions
    of row 2 padding as the cache writes it: id 0, log-prob 0, tail -inf), row 3 CE, row 4 SFT, row 5 a
    REDI pair. Rows without a teacher carry zeros in the teacher fields, as the pipeline fills them."""
    rng = np.random.default_rng(seed)
    x_BLD = rng.normal(size=(B, L, D))
    x_BLD[1] *= 3.0                               # a peaked student row
    head_VD = rng.normal(size=(V, D))
    ids, top, tail = (np.zeros((B, L, k), np.int32), np.zeros((B, L, k)), np.zeros((B, L)))
    for b, scale in ((0, 1.5), (1, 4.0), (2, 2.0)):
        ids[b], top[b], tail[b] = _teacher_topk(rng, scale, k)
    mask = (rng.random((B, L)) > 0.2).astype(np.int32)
    if pad:
        ids[2, -3:], top[2, -3:], tail[2, -3:], mask[2, -3:] = 0, 0.0, -np.inf, 0
    segments = np.ones((B, L), np.int32)
    segments[5] = [1, 1, 1, 1, 2, 2, 2, 0]
    mask[5] = [0, 1, 1, 1, 0, 1, 1, 0]
    batch = {"targets": rng.integers(0, V, (B, L)).astype(np.int32), "loss_mask": mask, "segment_ids": segments,
             "source_id": np.array([1, 1, 1, 0, 2, 3], np.int32), "teacher_ids": ids,
             "teacher_logprobs": top.astype(np.float32), "teacher_tail": tail.astype(np.float32)}
    return jnp.asarray(x_BLD), jnp.asarray(head_VD), {k_: jnp.asarray(v) for k_, v in batch.items()}


def reference_loss(x_BLD, head_VD, batch, cfg):
    logits_BLV = jnp.einsum("bld,vd->blv", x_BLD, head_VD)
    return reference.batch_loss_from_logits(logits_BLV, batch, objectives.SourceObjectives.from_config(cfg),
                                            cfg.distill, 0)[0]


def chunked_loss(x_BLD, head_VD, batch, cfg, loss_chunk=4):
    table = objectives.SourceObjectives.from_config(cfg)
    teacher = {f: batch[f] for f in chunked_head.TEACHER_FIELDS}
    logp_BL, kd_BL = chunked_head.token_quantities(x_BLD, head_VD, batch["targets"], teacher, cfg.distill,
                                                 loss_chunk=loss_chunk)
    return objectives.batch_loss(objectives.ModelOutputs(logp_BL, kd_BL), batch, table, cfg.distill, 0)[0]


def value_and_grads(loss_fn, *args):
    return jax.jit(jax.value_and_grad(loss_fn, argnums=(0, 1)), static_argnums=(3,))(*args)


# On padding positions (teacher tail -inf) reverse KL and Jeffreys are +inf per token in the reference
# too, and inf * 0 makes its masked mean NaN: a limit of the cache's padding convention, not of this
# path. For those two the padded positions carry a finite teacher tail here.
_INF_ON_PADDING = ("reverse_kl", "jeffreys")


@pytest.mark.parametrize("temperature", [1.0, 2.0])
@pytest.mark.parametrize("tail", ["bucket", "renormalize"])
def test_chunked_batch_loss_and_gradients_equal_the_logits_reference(tail, temperature):
    """Every divergence in one compiled function (one compilation per tail mode and temperature)."""
    x_BLD, head_VD, batch = mixed_batch()
    cfgs = {kind: distill_config(kind=kind, tail=tail, temperature=temperature) for kind in divergences.DIVERGENCES}
    finite_tail = batch["teacher_tail"].at[2, -3:].set(np.float32(np.log(0.2)))
    batches = {kind: {**batch, "teacher_tail": finite_tail} if kind in _INF_ON_PADDING else batch
               for kind in cfgs}

    # The batch is an argument, not a constant: XLA would fold the teacher's float32 side at compile time,
    # with other rounding than at run time, differently in the two paths.
    @jax.jit
    def both(x_BLD, head_VD, batches):
        grad = lambda f, kind: jax.value_and_grad(f, argnums=(0, 1))(x_BLD, head_VD, batches[kind], cfgs[kind])
        return {kind: (grad(reference_loss, kind), grad(chunked_loss, kind)) for kind in cfgs}

    for kind, ((want, (want_dx, want_dw)), (got, (got_dx, got_dw))) in both(x_BLD, head_VD, batches).items():
        assert np.isfinite(float(want)) and abs(float(want)) > 1e-3, kind
        np.testing.assert_allclose(got, want, **TOL, err_msg=kind)
        np.testing.assert_allclose(got_dx, want_dx, **TOL, err_msg=kind)
        np.testing.assert_allclose(got_dw, want_dw, **TOL, err_msg=kind)
        assert np.abs(np.asarray(want_dx[:3])).max() > 1e-3, kind   # the KD rows do reach the hidden states


@pytest.mark.parametrize("loss_chunk", [2, 64])
def test_every_chunk_length_gives_the_same_token_quantities(loss_chunk):
    cfg = distill_config(temperature=2.0)
    x_BLD, head_VD, batch = mixed_batch(seed=1)
    teacher = {f: batch[f] for f in chunked_head.TEACHER_FIELDS}
    logp_BL, kd_BL = chunked_head.token_quantities(x_BLD, head_VD, batch["targets"], teacher, cfg.distill,
                                                 loss_chunk=loss_chunk)
    logits_BLV = jnp.einsum("bld,vd->blv", x_BLD, head_VD)
    want = reference.token_quantities_from_logits(logits_BLV, batch, objectives.SourceObjectives.from_config(cfg),
                                                  cfg.distill)
    want_logp, want_kd = want.logp_BL, want.kd_BL
    np.testing.assert_allclose(logp_BL, want_logp, **TOL)
    # per token the KD agrees wherever the top-k ids are distinct (the KD rows' non-padding positions)
    np.testing.assert_allclose(kd_BL[:2], want_kd[:2], **TOL)
    np.testing.assert_allclose(kd_BL[2, :-3], want_kd[2, :-3], **TOL)


def test_the_tail_formula_carries_the_student_mass_outside_the_top_k():
    x_BLD, head_VD, batch = mixed_batch()
    z_BLV = jnp.einsum("bld,vd->blv", x_BLD, head_VD)
    logp_BLV = jax.nn.log_softmax(z_BLV, -1)
    top_BLK = jnp.take_along_axis(logp_BLV, batch["teacher_ids"], -1)[:2]
    tail_BL = terms.student_tail_from_topk(top_BLK, V)[..., 0]
    in_top_BLV = jax.nn.one_hot(batch["teacher_ids"][:2], V).sum(-2) > 0
    want_BL = jax.nn.logsumexp(jnp.where(in_top_BLV, -jnp.inf, logp_BLV[:2]), -1)
    np.testing.assert_allclose(tail_BL, want_BL, **TOL)
    mass_BL = np.exp(np.asarray(tail_BL))
    assert mass_BL.max() > 0.3 and mass_BL.min() > 1e-6   # real mass outside the top k, and well resolved


def test_the_guard_keeps_value_and_gradient_finite_where_the_top_k_mass_reaches_one():
    """Padding positions whose student puts more than 1/k on token 0 count its mass k times (> 1): the bare
    formula takes the log of a negative number there (NaN, which the loss mask cannot remove: NaN * 0),
    the guarded one stays finite and the batch loss and its gradients equal the reference."""
    cfg = distill_config(kind="jsd")
    x_BLD, head_VD, batch = mixed_batch()
    x_BLD = x_BLD.at[2, -3:].set(4.0 * head_VD[0] / jnp.linalg.norm(head_VD[0]) ** 2)   # z_0 = 4 + ...
    z_BLV = jnp.einsum("bld,vd->blv", x_BLD, head_VD)
    top_K = jnp.take_along_axis(jax.nn.log_softmax(z_BLV[2, -1]), batch["teacher_ids"][2, -1], -1)
    assert float(jax.nn.logsumexp(top_K)) > 0                          # the guard's case does occur
    assert np.isnan(float(jnp.log(-jnp.expm1(jax.nn.logsumexp(top_K)))))
    guarded = jax.value_and_grad(lambda t: terms.student_tail_from_topk(t[None, None], V).sum())(top_K)
    assert np.isfinite(float(guarded[0])) and np.isfinite(np.asarray(guarded[1])).all()
    want, (want_dx, want_dw) = value_and_grads(reference_loss, x_BLD, head_VD, batch, cfg)
    got, (got_dx, got_dw) = value_and_grads(chunked_loss, x_BLD, head_VD, batch, cfg)
    np.testing.assert_allclose(got, want, **TOL)
    np.testing.assert_allclose(got_dx, want_dx, **TOL)
    np.testing.assert_allclose(got_dw, want_dw, **TOL)


def test_a_tail_below_resolution_is_floored_with_a_finite_gradient():
    """A peaked row whose top-k sum rounds to exactly 1 (tail e^-1000): log(1 - 1) would be -inf with an
    infinite gradient (NaN after the chain rule); the floor gives log(eps) and a finite gradient."""
    top_K = jnp.asarray([0.0, -1000.0, -1000.0, -1000.0])
    assert float(jax.nn.logsumexp(top_K)) == 0.0
    bare = jax.grad(lambda t: jnp.log(-jnp.expm1(jax.nn.logsumexp(t))))(top_K)
    assert not np.isfinite(np.asarray(bare)).all()
    value, grad = jax.value_and_grad(lambda t: terms.student_tail_from_topk(t[None, None], V).sum())(top_K)
    assert float(value) == np.log(np.finfo(np.float64).eps) and np.isfinite(np.asarray(grad)).all()


def test_k_equal_to_vocab_has_an_empty_tail_with_finite_gradients():
    """At k = V the tail holds nothing: for every divergence (at T = 2, and the two KLs at T = 1 too) the
    value of the masked reference and its (finite) gradient. Reverse KL and Jeffreys would be infinite if
    the empty tail got any mass."""
    x_BLD, head_VD, batch = mixed_batch(seed=2, k=V, pad=False)
    batch["teacher_tail"] = jnp.where(batch["source_id"][:, None] == 1, -jnp.inf, batch["teacher_tail"])
    cases = [(kind, 2.0) for kind in divergences.DIVERGENCES] + [("forward_kl", 1.0), ("reverse_kl", 1.0)]
    cfgs = {case: distill_config(kind=case[0], temperature=case[1], tail="bucket") for case in cases}

    @jax.jit
    def both(x_BLD, head_VD, batch):
        grad = lambda f, case: jax.value_and_grad(f, argnums=(0, 1))(x_BLD, head_VD, batch, cfgs[case])
        return [(grad(reference_loss, case), grad(chunked_loss, case)) for case in cases]

    for case, ((want, (want_dx, want_dw)), (got, (got_dx, got_dw))) in zip(cases, both(x_BLD, head_VD, batch)):
        assert np.isfinite(np.asarray(got_dx)).all() and np.isfinite(np.asarray(got_dw)).all(), case
        np.testing.assert_allclose(got, want, **TOL, err_msg=str(case))
        np.testing.assert_allclose(got_dx, want_dx, **TOL, err_msg=str(case))
        np.testing.assert_allclose(got_dw, want_dw, **TOL, err_msg=str(case))


def test_the_block_is_the_largest_divisor_of_the_sequence_within_loss_chunk():
    """Any sequence length works with any loss_chunk (set in any order on the command line): the block is the
    longest that divides the sequence and is at most loss_chunk."""
    assert chunked_head.chunk_length(8, 64) == 8 and chunked_head.chunk_length(64, 16) == 16
    assert chunked_head.chunk_length(8, 3) == 2 and chunked_head.chunk_length(640, 256) == 160
    assert chunked_head.chunk_length(7, 4) == 1                    # a prime length: one position per block
    cfg = apply_overrides(load_recipe(TINY), ["data.seq_len=64", "loss_chunk=48"])
    assert chunked_head.chunk_length(cfg.data.seq_len, cfg.loss_chunk) == 32


def _f32_shapes(hlo_text):
    return {tuple(int(d) for d in dims.split(",")) for dims in re.findall(r"f32\[([\d,]+)\]", hlo_text)}


def test_the_compiled_train_step_holds_no_float32_logits_of_the_whole_batch():
    """The optimized HLO of the jitted train step (CE and KD rows) has no f32 buffer of B * L * V or more
    elements with a V axis; with one block as long as the sequence (the control) it does."""
    from bitjax.training.trainer import Trainer

    jax.config.update("jax_enable_x64", False)   # the step as it trains
    b, seq, vocab = 4, 64, 512
    cfg = apply_overrides(load_recipe(TINY), ["model.n_layers=1", "model.d_model=64", "model.d_ff=256",
                                              f"model.vocab_size={vocab}", f"data.seq_len={seq}",
                                              f"data.batch_size={b}", f"data.vocab_size={vocab}"])
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, sources=SOURCES[:2]),
                              distill=dataclasses.replace(cfg.distill, cache="unused", k=8))

    def large_logits(loss_chunk):
        trainer = Trainer.create(dataclasses.replace(cfg, loss_chunk=loss_chunk))
        batch = {name: jax.ShapeDtypeStruct(shape, dtype) for name, (shape, dtype) in trainer.batch_shapes().items()}
        assert "teacher_ids" in batch
        hlo = trainer.jit_train_step().lower(trainer.abstract_state(), batch).compile().as_text()
        return {s for s in _f32_shapes(hlo) if vocab in s and np.prod(s) >= b * seq * vocab}

    assert large_logits(16) == set()
    assert (b, seq, vocab) in large_logits(seq)
