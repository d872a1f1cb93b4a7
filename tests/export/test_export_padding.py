"""GGUF TQ export of widths that are not multiples of 256 (SmolLM2-135M's 576 / 1536, 9 / 3 heads): written
zero-padded (bitjax.export.padding), the file computes the unpadded network."""

import dataclasses
from fractions import Fraction

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bitjax.export import gguf_writer, llama_check
from bitjax.export import reference as ref
from bitjax.export.model_source import TernaryModel, flatten_params
from bitjax.export.padding import pad_model, padded_shape

# SmolLM2-135M's widths, two blocks (the second kept in full precision), a small vocabulary
from bitjax.nn.model_config import ModelConfig
from bitjax.nn.transformer import Transformer
from tests.support import TINY

SMOLLM2_WIDTHS = dict(vocab_size=2048, d_model=576, n_layers=2, n_heads=9, n_kv_heads=3, head_dim=64, d_ff=1536,
                      int8_matmul=False, full_precision_layers=(1,), init_std=0.05)


@pytest.fixture(scope="module")
def models(trained_run):
    """(config, A8 forward, A16 forward, TernaryModel) of one random model of SmolLM2's widths."""
    cfg = ModelConfig.tiny(**SMOLLM2_WIDTHS)
    model = Transformer(cfg, rngs=nnx.Rngs(0))
    a16 = Transformer(dataclasses.replace(cfg, quantize_activations=False), rngs=nnx.Rngs(0))
    ternary = TernaryModel.from_params(cfg, flatten_params(nnx.state(model, nnx.Param)),
                                       tokenizer_path=trained_run / "tokenizer.json", step=0)
    return cfg, model, a16, ternary


TOKENS = np.random.default_rng(0).integers(0, 2048, size=96).astype(np.int32)


def test_padded_shape_of_smollm2_and_of_widths_no_ratio_fixes():
    shape = padded_shape(ModelConfig.tiny(**SMOLLM2_WIDTHS))
    assert (shape.ratio, shape.d_model, shape.d_ff, shape.n_heads, shape.n_kv_heads) == (Fraction(4, 3), 768,
                                                                                         2048, 12, 4)
    assert padded_shape(ModelConfig.tiny(d_ff=320)) is None   # 256 wide: only ratio 1 or 2, and 320 fits neither


def test_padded_file_imports_back_as_the_unpadded_network(models, tmp_path, capsys):
    """`bitjax export`'s TQ2_0 file holds the padded codes (said on stderr); bitjax's own GGUF import of the
    padded network (codes times scales, padded norms and epsilon, the full-precision block in F32) gives the
    unpadded W1.58A16 forward: the padding changes the storage, not the function."""
    from bitjax.pretrained.gguf import gguf_model, gguf_model_config

    cfg, _, a16, ternary = models
    gguf_writer.write_gguf(ternary, tmp_path / "tq2_0.gguf", "tq2_0", embedding_type="f32")
    note = capsys.readouterr().err
    assert note.count("\n") == 1 and "zero-padded (d_model 576 -> 768, d_ff 1536 -> 2048, heads 9/3 -> 12/4" in note
    padded = pad_model(ternary, padded_shape(cfg))
    _, codes, scales = gguf_writer.read_ternary(tmp_path / "tq2_0.gguf")
    for name, tensor in padded.ternary.items():
        np.testing.assert_array_equal(codes[gguf_writer.gguf_name(name)], tensor.codes_OI)
        assert scales[gguf_writer.gguf_name(name)] == ternary.ternary[name].scale
    got_cfg = gguf_model_config(tmp_path / "tq2_0.gguf")
    assert (got_cfg.d_model, got_cfg.d_ff, got_cfg.n_heads, got_cfg.n_kv_heads) == (768, 2048, 12, 4)
    assert got_cfg.norm_eps == pytest.approx(0.75e-5)

    gguf_writer.write_gguf(padded, tmp_path / "f32.gguf", "f32")
    want = np.asarray(a16(jnp.asarray(TOKENS[None])))[0]
    got = np.asarray(gguf_model(tmp_path / "f32.gguf")(TOKENS[None]))[0]
    np.testing.assert_allclose(got, want, atol=2e-4, rtol=2e-4)   # float32 rounding of the norm scales


def test_llama_cpp_on_the_padded_f32_network_computes_the_unpadded_one(models, tmp_path):
    """llama.cpp's float path on the padded network against bitjax's unpadded A16 forward, held as closely as an
    unpadded F32 export (tests/export/test_export_gguf.py: within 1e-2)."""
    pytest.importorskip("llama_cpp")
    cfg, _, a16, ternary = models
    gguf_writer.write_gguf(pad_model(ternary, padded_shape(cfg)), tmp_path / "f32.gguf", "f32")
    llm = llama_check.open_model(tmp_path / "f32.gguf", n_ctx=len(TOKENS) + 8)
    try:
        theirs = llama_check.llama_logits(llm, TOKENS)
    finally:
        llm.close()
    figures = ref.agreement(np.asarray(a16(jnp.asarray(TOKENS[None])))[0], theirs, TOKENS)
    assert figures["max_abs_logit_diff"] < 1e-2 and figures["argmax_agreement"] == 1.0


@pytest.fixture(scope="module")
def padded_run(tmp_path_factory):
    """The export tests' tiny model at widths TQ cannot hold (192 wide, 3 heads of 64, FFN 576; ratio 4/3 pads
    them to 256, 4 heads, 768), trained the same 60 steps."""

    from bitjax.config import apply_overrides, load_recipe
    from bitjax.training import train
    from tests.support import EXPORT_RUN_OVERRIDES

    workdir = tmp_path_factory.mktemp("padded_run")
    recipe = TINY
    widths = ["model.d_model=192", "model.n_kv_heads=1", "model.n_heads=3", "model.n_kv_heads=3", "model.d_ff=576"]
    train(apply_overrides(load_recipe(recipe), EXPORT_RUN_OVERRIDES + widths), workdir, progress=False)
    return workdir


def test_padded_tq2_0_export_agrees_with_the_training_forward_like_any_other(padded_run, tmp_path):
    """`bitjax export --format gguf` pads the trained model; llama.cpp on it against bitjax's unpadded training
    forward, held to the bounds of tests/export/test_export_gguf.py's unpadded TQ exports (F16 embedding: at least
    251/256 argmax, perplexity within 0.1%)."""
    pytest.importorskip("llama_cpp")
    from bitjax.export import export_run
    from bitjax.export.runtime_report import format_agreement, llama_cpp_report

    out = tmp_path / "padded.gguf"
    export_run(padded_run, out, format="gguf", gguf_type="tq2_0", embedding_type="f16")
    r = llama_cpp_report(padded_run, out, n_tokens=256, n_greedy=16)
    print("\n" + format_agreement("llama.cpp padded tq2_0 vs bitjax A8 (unpadded)", r["vs_a8"]))
    assert r["vs_a8"]["argmax_agreement"] >= 251 / 256
    assert r["vs_a8"]["argmax_agreement_clear"] == 1.0
    assert r["vs_a8"]["ppl_rel_diff"] <= 1e-3
