"""Attention kernels against a float64 loop reference: packed documents, GQA, padding rows; the switch; and the
compiled TPU step without an L x L score buffer."""

import dataclasses
import importlib.util
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bitjax.errors import ConfigError
from bitjax.nn import attention
from bitjax.nn.attention import AttentionMask, attend
from tests.support import ROOT

needs_libtpu = pytest.mark.skipif(importlib.util.find_spec("libtpu") is None, reason="libtpu is not installed")


@pytest.fixture
def x64():
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", False)


def segments(B: int, L: int) -> np.ndarray:
    """Row 0: three documents then padding; row 1: one document then padding; further rows: one full document."""
    seg_BL = np.ones((B, L), np.int32)
    seg_BL[0, L // 4:] = 2
    seg_BL[0, L // 2:] = 5
    seg_BL[0, L - L // 8:] = 0
    seg_BL[1, :] = 7
    seg_BL[1, L - L // 3:] = 0
    return seg_BL


def qkv(B, L, K, G, H, dtype, seed=0):
    rng = np.random.default_rng(seed)
    draw = lambda *shape: rng.standard_normal(shape)  # noqa: E731
    # Peaked scores (scale 3) so a wrong mask or grouping moves the output by O(1), not by an average.
    return 3 * draw(B, L, K * G, H).astype(dtype), draw(B, L, K, H).astype(dtype), draw(B, L, K, H).astype(dtype)


def loop_reference(q_BLNH, k_BMKH, v_BMKH, seg_BL):
    """Per query, per head, in float64 numpy: keys m <= l of the same segment, head n reading kv head n // G."""
    B, L, N, H = q_BLNH.shape
    G = N // k_BMKH.shape[2]
    out = np.zeros((B, L, N, H))
    for b in range(B):
        for n in range(N):
            for q_pos in range(L):
                seen = [m for m in range(q_pos + 1) if seg_BL[b, m] == seg_BL[b, q_pos]]
                s = np.array([q_BLNH[b, q_pos, n] @ k_BMKH[b, m, n // G] for m in seen], np.float64) / np.sqrt(H)
                p = np.exp(s - s.max())
                out[b, q_pos, n] = (p / p.sum()) @ v_BMKH[b, seen, n // G]
    return out


def run(impl, q, k, v, seg, **kw):
    return np.asarray(attend(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), AttentionMask(jnp.asarray(seg)),
                             impl=impl, **kw))


@pytest.mark.parametrize("chunk", [None, 16, 24, 512])
def test_pure_jax_kernels_match_the_loop_in_float64(x64, chunk):
    """xla (None) and chunked: chunk 24 does not divide L (padded keys), 512 is one block (attend's default),
    16 gives blocks a query sees none of."""
    q, k, v = qkv(B=2, L=40, K=2, G=3, H=8, dtype=np.float64)
    seg = segments(2, 40)
    if chunk in (None, 512):
        out = run("xla" if chunk is None else "chunked", q, k, v, seg)
    else:
        out = np.asarray(attention.chunked(*(jnp.asarray(a) for a in (q, k, v, seg)), chunk=chunk))
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, loop_reference(q, k, v, seg), rtol=0, atol=1e-9)


def test_chunked_gradients_match_xla_in_float64(x64):
    q, k, v = (jnp.asarray(a) for a in qkv(B=2, L=40, K=2, G=2, H=8, dtype=np.float64, seed=1))
    mask = AttentionMask(jnp.asarray(segments(2, 40)))
    w = jnp.asarray(np.random.default_rng(2).standard_normal((2, 40, 4, 8)))

    def loss(fn):
        return jax.grad(lambda *a: jnp.sum(w * fn(*a)), argnums=(0, 1, 2))(q, k, v)

    ref = loss(lambda q, k, v: attend(q, k, v, mask, impl="xla"))
    got = loss(lambda q, k, v: attention.chunked(q, k, v, mask.segment_ids_BL, chunk=16))
    for r, g in zip(ref, got):
        np.testing.assert_allclose(np.asarray(g), np.asarray(r), rtol=0, atol=1e-9)


def test_splash_kernel_matches_the_loop_in_float32():
    """The Pallas kernel in interpret mode, float32 in and out. Its error is float32 rounding: the scores of
    8-wide dot products with |q| ~ 3 reach |s| ~ 10, so exp(s - max) carries ~1e-6 relative error, and
    the outputs (|o| < 3) inherit it: 2e-5 absolute is ~100 float32 ulps, far below a masking error (O(1))."""
    q, k, v = qkv(B=2, L=128, K=2, G=2, H=8, dtype=np.float32)
    seg = segments(2, 128)
    ref = loop_reference(q.astype(np.float64), k.astype(np.float64), v.astype(np.float64), seg)
    out = run("splash", q, k, v, seg, interpret=True)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, ref, rtol=0, atol=2e-5)
    assert np.abs(run("splash", q, k, v, segments(2, 128)[::-1].copy(), interpret=True) - ref).max() > 0.1


def test_splash_gradients_match_xla_in_float32():
    """The kernel's own backward (dq and dkv kernels) against autodiff of the reference, same tolerance reasoning."""
    q, k, v = (jnp.asarray(a) for a in qkv(B=1, L=128, K=1, G=2, H=8, dtype=np.float32, seed=3))
    mask = AttentionMask(jnp.asarray(segments(2, 128)[:1]))
    w = jnp.asarray(np.random.default_rng(4).standard_normal((1, 128, 2, 8)), jnp.float32)

    def grads(**kw):
        return jax.grad(lambda *a: jnp.sum(w * attend(*a, mask, **kw)), argnums=(0, 1, 2))(q, k, v)

    for r, g in zip(grads(impl="xla"), grads(impl="splash", interpret=True)):
        np.testing.assert_allclose(np.asarray(g), np.asarray(r), rtol=0, atol=1e-4)


def test_model_logits_do_not_depend_on_the_kernel(x64):
    from flax import nnx

    from bitjax.nn.model_config import ModelConfig
    from bitjax.nn.transformer import Transformer
    cfg = ModelConfig.tiny(vocab_size=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8, d_ff=64,
                           dtype="float64", attention="xla")
    tokens_BL = jnp.asarray(np.random.default_rng(5).integers(0, 64, (2, 24)), jnp.int32)
    seg_BL = jnp.asarray(segments(2, 24))
    ref = Transformer(cfg, rngs=nnx.Rngs(0))(tokens_BL, seg_BL)
    other = Transformer(dataclasses.replace(cfg, attention="chunked"), rngs=nnx.Rngs(0))(tokens_BL, seg_BL)
    np.testing.assert_allclose(np.asarray(other), np.asarray(ref), rtol=0, atol=1e-9)


def test_auto_follows_the_devices_of_the_trace():
    assert attention.resolve("auto") == "xla"     # these tests run on the CPU
    for platform, impl in (("tpu", "splash"), ("gpu", "cudnn"), ("cpu", "xla")):
        device = jax.sharding.AbstractDevice(device_kind="x", num_cores=None, platform=platform)
        mesh = jax.sharding.AbstractMesh((1, 1, 1), ("data", "fsdp", "tensor"), abstract_device=device)
        with jax.sharding.use_abstract_mesh(mesh):
            assert attention.resolve("auto", 256, jnp.bfloat16) == impl
            assert attention.resolve("auto", 200, jnp.float32) == "xla"   # neither kernel takes this
    assert attention.resolve("chunked") == "chunked"


def test_bad_settings_are_one_line_errors():
    from bitjax.config import TrainConfig, apply_overrides

    with pytest.raises(ConfigError, match=r"model.attention=flash: expected one of auto, xla, chunked, splash, cudnn"):
        apply_overrides(TrainConfig(), ["model.attention=flash"])
    with pytest.raises(ConfigError, match=r"^model.attention='flash'; use one of auto, xla, chunked, splash, cudnn$"):
        attention.check_impl("flash")
    q, k, v = qkv(B=1, L=128, K=1, G=1, H=8, dtype=np.float32)
    with pytest.raises(ConfigError, match=r"^model.attention='cudnn' needs an NVIDIA GPU, not 'cpu'"):
        run("cudnn", q, k, v, np.ones((1, 128), np.int32))
    device = jax.sharding.AbstractDevice(device_kind="x", num_cores=None, platform="gpu")
    with jax.sharding.use_abstract_mesh(jax.sharding.AbstractMesh((1,), ("data",), abstract_device=device)):
        with pytest.raises(ConfigError, match=r"^model.attention='cudnn' needs model.dtype bfloat16 or float16"):
            run("cudnn", q, k, v, np.ones((1, 128), np.int32))
    with pytest.raises(ConfigError, match=r"sequence length divisible by 128, not 40; choose data.seq_len"):
        run("splash", q[:, :40], k[:, :40], v[:, :40], np.ones((1, 40), np.int32), interpret=True)


def test_cudnn_path_traces_forward_and_backward(monkeypatch):
    """No GPU here: cuDNN's version and device checks are answered as on an H100, the platform as "gpu"; the
    step must then trace (shapes, GQA, the segment mask and the backward wrapper are all checked while tracing)."""
    from jax._src.cudnn import fused_attention_stablehlo as cudnn_lib

    monkeypatch.setattr(cudnn_lib, "check_cudnn_version", lambda: 91000)
    monkeypatch.setattr(cudnn_lib, "check_compute_capability", lambda capability: True)
    monkeypatch.setattr(cudnn_lib, "is_cuda_compute_capability_equal", lambda capability: False)
    monkeypatch.setattr(attention, "platform", lambda: "gpu")
    q_BLNH, k_BMKH = jnp.zeros((2, 256, 4, 64), jnp.bfloat16), jnp.zeros((2, 256, 2, 64), jnp.bfloat16)
    mask = AttentionMask(jnp.ones((2, 256), jnp.int32))
    loss = lambda q, k, v: attend(q, k, v, mask, impl="auto").astype(jnp.float32).sum()  # noqa: E731
    traced = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2))).trace(q_BLNH, k_BMKH, k_BMKH)
    assert "dot_product_attention_bwd_wrapper" in str(traced.jaxpr)
    assert [a.shape for a in traced.jaxpr.out_avals] == [(), (2, 256, 4, 64), (2, 256, 2, 64), (2, 256, 2, 64)]


def test_changing_the_kernel_keeps_checkpoints_compatible(tmp_path):
    from bitjax.config import apply_overrides, load_recipe
    from bitjax.training.checkpointer import check_compatible, meta_for

    cfg = load_recipe(ROOT / "recipes" / "tiny.py")
    meta = meta_for(apply_overrides(cfg, ["model.attention=xla"]), "tok")
    check_compatible(meta, apply_overrides(cfg, ["model.attention=splash"]), "tok", tmp_path)
    with pytest.raises(ConfigError, match="n_layers"):
        check_compatible(meta, apply_overrides(cfg, ["model.n_layers=1"]), "tok", tmp_path)


SCORES = re.compile(r"f32\[(?:\d+,)+640,640\]")   # a score tensor of L = 640 (no model width is 640)


def test_chunked_gradient_keeps_no_score_matrix():
    """The backward pass recomputes each key block (a checkpointed scan) instead of saving them: its scratch
    stays under one f32 (N, L, L) score tensor, which the xla kernel's exceeds (so the check can fail)."""
    L, N = 1280, 2
    q_BLNH, k_BMKH, seg_BL = jnp.zeros((1, L, N, 16)), jnp.zeros((1, L, 1, 16)), jnp.ones((1, L), jnp.int32)

    def scratch_bytes(fn):
        grad = jax.jit(jax.grad(lambda q, k, v: fn(q, k, v).sum(), argnums=(0, 1, 2)))
        return grad.lower(q_BLNH, k_BMKH, k_BMKH).compile().memory_analysis().temp_size_in_bytes

    scores = N * L * L * 4
    assert scratch_bytes(lambda q, k, v: attention.chunked(q, k, v, seg_BL, chunk=128)) < scores / 2
    assert scratch_bytes(lambda q, k, v: attend(q, k, v, AttentionMask(seg_BL), impl="xla")) > scores


@needs_libtpu
def test_compiled_tpu_step_has_no_score_matrix_with_splash(monkeypatch):
    """The tiny recipe's train step compiled for a v5e-4 slice: auto picks splash for TPU devices, which leaves
    no f32 [.., L, L] buffer in the optimised HLO; the xla kernel has one (so the check can fail)."""
    from bitjax.config import apply_overrides, load_recipe
    from bitjax.fit_check import check as fit_check

    monkeypatch.setenv("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")   # libtpu's lock would refuse a second compiler here
    base = apply_overrides(load_recipe(ROOT / "recipes" / "tiny.py"),
                           ["model.n_layers=1", "loss_chunk=128", "data.seq_len=640", "data.batch_size=4"])
    hlo = {}
    for impl, mesh in (("auto", ["mesh.tensor=2", "mesh.data=-1"]), ("xla", [])):
        cfg = apply_overrides(base, [f"model.attention={impl}", *mesh])
        lowered, _ = fit_check.lower_step(cfg, fit_check.topology("v5e-4"))
        hlo[impl] = lowered.compile().as_text()
    assert "tpu_custom_call" in hlo["auto"] and not SCORES.search(hlo["auto"])
    assert "tpu_custom_call" not in hlo["xla"] and SCORES.search(hlo["xla"])


@pytest.mark.parametrize("impl, kind, length, dtype, says", [
    ("auto", "tpu", 100, "bfloat16", "data.seq_len=100 is not a multiple of 128"),
    ("auto", "tpu", 256, "float32", None),
    ("auto", "gpu", 256, "float32", "model.dtype=float32 is not a 16-bit float"),
    ("auto", "gpu", 100, "bfloat16", None),
    ("auto", "cpu", 100, "float32", None),          # xla is the kernel a CPU runs anyway
    ("xla", "tpu", 100, "float32", None),           # asked for by name: nothing to say
])
def test_auto_says_when_it_falls_back_to_xla_attention(impl, kind, length, dtype, says):
    reason = attention.auto_fallback(impl, kind, length, jnp.dtype(dtype))
    assert (reason is None) if says is None else (says in reason and "L x L" in reason), reason


@needs_libtpu
def test_a_tpu_run_with_a_length_splash_cannot_take_warns_at_start_up(capsys, monkeypatch):
    """The trainer on compile-only TPU devices (fit-check's libtpu topology): one warning line at start-up."""
    from bitjax import errors
    from bitjax.config import apply_overrides, load_recipe
    from bitjax.fit_check import check as fit_check
    from bitjax.training.trainer import Trainer
    from tests.support import TINY

    monkeypatch.setattr(errors, "_WARNED", set())
    cfg = apply_overrides(load_recipe(TINY), ["data.seq_len=96", "data.batch_size=8"])
    Trainer.create(cfg, fit_check.tpu_devices(fit_check.topology("v5e-8")))
    lines = capsys.readouterr().err.splitlines()
    assert [line for line in lines if line.startswith("bitjax: warning:")] == [
        "bitjax: warning: " + attention.auto_fallback("auto", "tpu", 96, jnp.float32)]
