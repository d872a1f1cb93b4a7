"""Packed export: exact codes on read-back, and transformers' BitNetForCausalLM against bitjax's forward."""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

from bitjax.export import ExportError, export_run, hf_packed
from bitjax.export.hf_check import hf_logits, load_model
from bitjax.export.hf_packed import read_packed, write_packed
from bitjax.export.model_source import load_run, ternary_names
from bitjax.export.runtime_report import format_agreement, transformers_report
from bitjax.nn import quant
from tests.support.random_models import random_model


@pytest.fixture(scope="module")
def packed_dir(trained_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("packed") / "tiny-packed"
    export_run(trained_run, out, format="packed")
    return out


def test_codes_and_scales_read_back_equal_training_quantizer(trained_run, packed_dir):
    run = load_run(trained_run)
    config, codes, scales = read_packed(packed_dir)
    assert config["model_type"] == "bitnet" and config["hidden_act"] == "silu"
    assert config["quantization_config"] == {
        "quant_method": "bitnet", "linear_class": "autobitlinear", "quantization_mode": "offline"}
    params = run.flat_params()
    for name in ternary_names(run.config.model):
        expected_IO, scale = quant.ternary_codes(params[f"{name}.kernel"])
        np.testing.assert_array_equal(codes[name], np.asarray(expected_IO).T, err_msg=name)
        # autobitlinear offline multiplies by weight_scale: it is mean(|W|), not its inverse
        assert scales[name][0] == np.float32(scale)
        np.testing.assert_allclose(scales[name][0], np.mean(np.abs(params[f"{name}.kernel"]), dtype=np.float64),
                                   rtol=1e-6)
    assert sorted(os.listdir(packed_dir)) == ["README.md", "config.json", "model.safetensors", "tokenizer.json",
                                              "tokenizer_config.json"]


def test_model_card_states_architecture_training_and_loading(trained_run, packed_dir):
    card = (packed_dir / "README.md").read_text()
    summary = json.loads((trained_run / "summary.json").read_text())
    assert card.startswith("---\nlibrary_name: transformers\n")
    assert "| layers, width, FFN width | 2, 256, 768 |" in card and "SiLU-gated (`hidden_act: silu`)" in card
    assert f"| steps | {summary['steps']:,} |" in card
    assert f"| tokens seen | {summary['tokens_seen']:,} |" in card
    assert f"| held-out perplexity | {summary['heldout_perplexity']:.2f} (evaluated during training at step 60" in card
    assert "| teacher | none: next-token cross-entropy only |" in card
    assert "BitNetForCausalLM.from_pretrained" in card and "bitjax generate" in card
    assert str(trained_run.parents[1]) not in card and "/work/" not in card  # no local paths in a public card


def test_transformers_matches_bitjax_training_forward(trained_run, packed_dir):
    r = transformers_report(trained_run, packed_dir, n_tokens=256)
    print("\n" + format_agreement("transformers BitNetForCausalLM vs bitjax A8", r["vs_a8"]))
    assert r["vs_a8"]["argmax_agreement"] >= 0.99
    assert r["vs_a8"]["ppl_rel_diff"] <= 0.01
    assert r["tokenizer_identical"] == r["tokenizer_probes"]


def test_relu2_model_runs_in_transformers(trained_run, tmp_path):
    """The relu2 FFN (the bitnet_2b4t preset's) is checked through transformers, at a small shape."""
    _, model, ternary = random_model(trained_run / "tokenizer.json", ffn_activation="relu2", n_layers=2)
    write_packed(ternary, tmp_path / "relu2")
    assert json.loads((tmp_path / "relu2" / "config.json").read_text())["hidden_act"] == "relu2"
    tokens = np.random.default_rng(0).integers(0, 2048, size=64)
    expected = np.asarray(model(jnp.asarray(tokens[None], jnp.int32)))[0]
    got = hf_logits(load_model(tmp_path / "relu2"), tokens)
    assert np.mean(expected.argmax(-1) == got.argmax(-1)) >= 0.99
    # int8 activation rounding can flip at exact .5 boundaries (float summation order), so a few logits
    # move by up to ~2e-2; on average the two forwards agree far closer.
    assert np.mean(np.abs(expected - got)) < 1e-3


def test_w158a16_model_is_refused_for_transformers(trained_run, tmp_path):
    _, _, ternary = random_model(trained_run / "tokenizer.json", quantize_activations=False)
    with pytest.raises(ExportError, match="quantize_activations=False.*int8 per token"):
        write_packed(ternary, tmp_path / "a16")
    assert not (tmp_path / "a16").exists()


def test_existing_directory_needs_force_and_failed_export_leaves_it_intact(trained_run, tmp_path, monkeypatch):
    out = tmp_path / "packed"
    out.mkdir()
    (out / "marker").write_text("old")
    with pytest.raises(ExportError, match="already exists; pass --force"):
        export_run(trained_run, out, format="packed")

    def corrupt(*args, **kwargs):
        raise ExportError("read-back differs")

    monkeypatch.setattr(hf_packed, "verify_packed", corrupt)
    with pytest.raises(ExportError, match="read-back differs"):
        export_run(trained_run, out, format="packed", force=True)
    assert sorted(os.listdir(tmp_path)) == ["packed"] and os.listdir(out) == ["marker"]
    monkeypatch.undo()
    export_run(trained_run, out, format="packed", force=True)
    assert "marker" not in os.listdir(out) and (out / "model.safetensors").exists()
