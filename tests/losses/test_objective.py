"""The batch loss of mixed sources: per-source objectives and loss weights, REDI in one row per pair."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bitjax.config import SourceConfig, load_recipe
from bitjax.losses import objectives, reference
from tests.support import TINY

B, L, V, K = 6, 10, 32, 4


def config_with(*sources):
    cfg = load_recipe(TINY)
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, sources=sources),
                               distill=dataclasses.replace(cfg.distill, cache="unused"))


def random_batch(source_id, seed=0):
    rng = np.random.default_rng(seed)
    logits = jnp.asarray(rng.normal(size=(B, L, V)) * 2, jnp.float32)
    mask = (rng.random((B, L)) > 0.2).astype(np.int32)
    teacher = rng.normal(size=(B, L, V)) * 3
    ids = np.argsort(-teacher, -1)[..., :K].astype(np.int32)
    logp = teacher - np.log(np.exp(teacher).sum(-1, keepdims=True))
    top = np.take_along_axis(logp, ids, -1).astype(np.float32)
    batch = {"targets": rng.integers(0, V, (B, L)).astype(np.int32), "loss_mask": mask,
             "segment_ids": np.ones((B, L), np.int32), "source_id": np.asarray(source_id, np.int32),
             "teacher_ids": ids, "teacher_logprobs": top,
             "teacher_tail": np.log1p(-np.exp(top).sum(-1)).astype(np.float32)}
    return logits, batch


def test_one_ce_source_is_token_mean_cross_entropy():
    cfg = config_with(SourceConfig("text", "tfds:shakespeare"))
    logits, batch = random_batch([0] * B)
    table = objectives.SourceObjectives.from_config(cfg)
    loss, metrics = reference.batch_loss_from_logits(logits, batch, table, cfg.distill, 0)
    want = reference.cross_entropy(logits, batch["targets"], batch["loss_mask"])
    np.testing.assert_allclose(loss, want, rtol=1e-6)
    np.testing.assert_allclose(metrics["loss/text"], want, rtol=1e-6)


def test_sources_count_by_their_rows_and_loss_weights():
    cfg = config_with(SourceConfig("a", "tfds:shakespeare", loss_weight=2.0),
                      SourceConfig("b", "tfds:kjv", objective="kd"),
                      SourceConfig("c", "tfds:kjv", loss_weight=0.5))
    cfg = dataclasses.replace(cfg, distill=dataclasses.replace(cfg.distill, kd_weight=0.7))
    source_id = [0, 1, 1, 0, 1, 0]              # c is absent from this batch
    logits, batch = random_batch(source_id)
    table = objectives.SourceObjectives.from_config(cfg)
    loss, metrics = reference.batch_loss_from_logits(logits, batch, table, cfg.distill, 0)
    rows = {s: np.asarray(source_id) == i for i, s in enumerate("abc")}
    mask = batch["loss_mask"]
    ce_a = reference.cross_entropy(logits[rows["a"]], batch["targets"][rows["a"]], mask[rows["a"]])
    sel = rows["b"]
    ce_b = reference.cross_entropy(logits[sel], batch["targets"][sel], mask[sel])
    kd_b = reference.sparse_kd_loss(logits[sel], batch["teacher_ids"][sel], batch["teacher_logprobs"][sel], mask[sel],
                                  batch["teacher_tail"][sel])
    want = 2.0 * 3 / 6 * ce_a + 1.0 * 3 / 6 * (0.7 * kd_b + 0.3 * ce_b)
    np.testing.assert_allclose(loss, want, rtol=1e-5)
    np.testing.assert_allclose(metrics["kd"], kd_b, rtol=1e-5)
    assert np.isnan(metrics["loss/c"]) and not np.isnan(metrics["loss/a"])


def test_redi_in_one_row_equals_redi_over_two_rows_of_the_same_logits():
    """On given logits, the masks of a pair packed as two segments of one row give REDI's value and logit
    gradient of the two-row form (the real-model version follows)."""
    cfg = config_with(SourceConfig("text", "tfds:shakespeare"), SourceConfig("pairs", "traces:x.jsonl",
                                                                              objective="redi"))
    rng = np.random.default_rng(3)
    logits = jnp.asarray(rng.normal(size=(2, L, V)), jnp.float32)
    targets = rng.integers(0, V, (2, L)).astype(np.int32)
    segments = np.array([[1, 1, 1, 1, 2, 2, 2, 2, 2, 0]] * 2, np.int32)
    mask = np.array([[0, 1, 1, 1, 0, 0, 1, 1, 1, 0]] * 2, np.int32)
    batch = {"targets": targets, "loss_mask": mask, "segment_ids": segments, "source_id": np.array([1, 1], np.int32)}
    table = objectives.SourceObjectives.from_config(cfg)

    def packed(z):
        return reference.batch_loss_from_logits(z, batch, table, cfg.distill, 0)[0]

    def two_forwards(z):
        pos, neg = (mask * (segments == s) for s in (1, 2))
        return reference.redi_loss(z, targets, pos, z, targets, neg, alpha=cfg.distill.redi_alpha)[0]

    np.testing.assert_allclose(packed(logits), two_forwards(logits), rtol=1e-6)
    np.testing.assert_allclose(jax.grad(packed)(logits), jax.grad(two_forwards)(logits), rtol=1e-5, atol=1e-7)
    _, metrics = reference.batch_loss_from_logits(logits, batch, table, cfg.distill, 0)
    assert metrics["redi/positive_logprob"] < 0 and np.isnan(metrics["loss/text"])


@pytest.mark.parametrize("weight", [0.0, 1.0])
def test_a_zero_loss_weight_removes_the_source_from_the_gradient(weight):
    cfg = config_with(SourceConfig("a", "tfds:shakespeare"), SourceConfig("b", "tfds:kjv", loss_weight=weight))
    logits, batch = random_batch([0, 0, 0, 1, 1, 1])
    grads = jax.grad(lambda z: reference.batch_loss_from_logits(z, batch, objectives.SourceObjectives.from_config(cfg),
                                                                cfg.distill, 0)[0])(logits)
    assert (np.abs(np.asarray(grads[3:])).max() > 0) == (weight > 0)


def test_redi_in_one_row_equals_redi_over_two_real_forward_passes():
    """A real model (1 ternary layer): one packed row [prompt + positive | prompt + negative] (segments 1, 2,
    positions restarting) through batch_loss gives the value and parameter gradient of REDI over two
    separate forward passes, one per completion."""
    from flax import nnx

    from bitjax.nn.model_config import ModelConfig
    from bitjax.nn.transformer import Transformer
    cfg = config_with(SourceConfig("text", "tfds:shakespeare"), SourceConfig("pairs", "traces:x.jsonl",
                                                                              objective="redi"))
    graphdef, params = nnx.split(Transformer(ModelConfig.tiny(vocab_size=V, n_layers=1), rngs=nnx.Rngs(0)))
    prompt, positive, negative = [3, 7, 9], [4, 5, 6, 2], [8, 1, 11]
    n = 16

    def row(seqs):
        """inputs, targets, completion mask, segment ids, positions for segments laid out one after another."""
        inputs, targets, mask, seg, pos = (np.zeros(n, np.int32) for _ in range(5))
        start = 0
        for s, completion in enumerate(seqs, 1):
            full = prompt + completion
            sl = slice(start, start + len(full))
            inputs[sl], seg[sl], pos[sl] = full, s, np.arange(len(full))
            targets[start:start + len(full) - 1] = full[1:]
            mask[start + len(prompt) - 1:start + len(full) - 1] = 1      # targets that are completion tokens
            start += len(full)
        return inputs[None], targets[None], mask[None], seg[None], pos[None]

    def forward(p, inputs, seg, pos):
        return nnx.merge(graphdef, p)(jnp.asarray(inputs), jnp.asarray(seg), jnp.asarray(pos))

    table = objectives.SourceObjectives.from_config(cfg)

    def packed(p):
        inputs, targets, mask, seg, pos = row([positive, negative])
        batch = {"targets": targets, "loss_mask": mask, "segment_ids": seg, "source_id": np.array([1], np.int32)}
        return reference.batch_loss_from_logits(forward(p, inputs, seg, pos), batch, table, cfg.distill, 0)[0]

    def two_forwards(p):
        i_w, t_w, m_w, s_w, p_w = row([positive])
        i_l, t_l, m_l, s_l, p_l = row([negative])
        return reference.redi_loss(forward(p, i_w, s_w, p_w), t_w, m_w, forward(p, i_l, s_l, p_l), t_l, m_l,
                                alpha=cfg.distill.redi_alpha)[0]

    (v_packed, g_packed), (v_two, g_two) = (jax.jit(jax.value_and_grad(f))(params) for f in (packed, two_forwards))
    np.testing.assert_allclose(v_packed, v_two, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(g_packed), jax.tree.leaves(g_two)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    # the value is REDI's: -mean log p(positive) + alpha * mean log p(negative), both non-zero here
    assert abs(float(v_two)) > 1e-3
