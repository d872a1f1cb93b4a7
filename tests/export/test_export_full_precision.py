"""A model with full-precision blocks (`model.full_precision_layers`) exported to both formats: plain weights on
read-back, and llama.cpp and transformers held to the same agreement bounds as an all-ternary export."""

import json

import gguf
import numpy as np
import pytest

from bitjax.export import ExportError, export_run, gguf_writer, hf_packed
from bitjax.export.model_source import TernaryModel, full_precision_names, load_run, ternary_names
from bitjax.export.runtime_report import format_agreement, llama_cpp_report, transformers_report
from tests.support import EXPORT_RUN_OVERRIDES, TINY

pytest.importorskip("llama_cpp")
pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def fp_run(tmp_path_factory):
    """The export tests' tiny model with its first block kept in full precision (about 30 s on 2 cores)."""

    from bitjax.config import apply_overrides, load_recipe
    from bitjax.training import train

    workdir = tmp_path_factory.mktemp("fp_run")
    recipe = TINY
    overrides = EXPORT_RUN_OVERRIDES + ["model.int8_matmul=false", "model.full_precision_layers=0"]
    train(apply_overrides(load_recipe(recipe), overrides), workdir, progress=False)
    return workdir


@pytest.fixture(scope="module")
def exports(fp_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("fp_exports")
    export_run(fp_run, out / "tq2_0.gguf", format="gguf", gguf_type="tq2_0", embedding_type="f16")
    export_run(fp_run, out / "f32.gguf", format="gguf", gguf_type="f32")
    export_run(fp_run, out / "packed", format="packed")
    return out


def test_full_precision_linears_are_plain_weights_in_both_files(fp_run, exports):
    run = load_run(fp_run)
    params = run.flat_params()
    assert full_precision_names(run.config.model)[0] == "layers.0.self_attn.q_proj"
    assert all(name.startswith("layers.1.") for name in ternary_names(run.config.model))
    types = {t.name: t for t in gguf.GGUFReader(exports / "tq2_0.gguf").tensors}
    assert types["blk.0.attn_q.weight"].tensor_type == gguf.GGMLQuantizationType.F16
    assert "blk.0.attn_q.scale" not in types and "blk.1.attn_q.scale" in types
    assert types["blk.1.ffn_down.weight"].tensor_type == gguf.GGMLQuantizationType.TQ2_0
    np.testing.assert_array_equal(np.asarray(types["blk.0.ffn_down.weight"].data),
                                  params["layers.0.mlp.down_proj.kernel"].T.astype(np.float16))

    card = (exports / "packed" / "README.md").read_text()
    assert "| full-precision blocks | 0: float32 weights and activations" in card
    config = json.loads((exports / "packed" / "config.json").read_text())
    assert config["quantization_config"]["modules_to_not_convert"] == ["lm_head", "model.layers.0"]
    _, codes, _ = hf_packed.read_packed(exports / "packed")
    assert set(codes) == set(ternary_names(run.config.model))
    from safetensors.numpy import load_file

    tensors = load_file(str(exports / "packed" / "model.safetensors"))
    np.testing.assert_array_equal(tensors["model.layers.0.self_attn.o_proj.weight"],
                                  params["layers.0.self_attn.o_proj.kernel"].T)


def test_llama_cpp_agrees_like_an_all_ternary_export(fp_run, exports):
    """The bounds of tests/export/test_export_gguf.py: F32 within 1e-2 of A16 with identical greedy tokens; TQ2_0 (F16
    embedding, F16 full-precision block) at least 251/256 argmax with A8 and perplexity within 0.1%."""
    r = llama_cpp_report(fp_run, exports / "f32.gguf", n_tokens=256, n_greedy=16)
    print("\n" + format_agreement("llama.cpp F32 (block 0 full precision) vs bitjax A16", r["vs_a16"]))
    assert r["vs_a16"]["max_abs_logit_diff"] < 1e-2 and r["greedy_llama"] == r["greedy_bitjax_a16"]
    r = llama_cpp_report(fp_run, exports / "tq2_0.gguf", n_tokens=256, n_greedy=16)
    print(format_agreement("llama.cpp TQ2_0 (block 0 F16) vs bitjax A8", r["vs_a8"]))
    assert r["vs_a8"]["argmax_agreement"] >= 251 / 256
    assert r["vs_a8"]["argmax_agreement_clear"] == 1.0
    assert r["vs_a8"]["ppl_rel_diff"] <= 1e-3


def test_transformers_agrees_like_an_all_ternary_export(fp_run, exports):
    r = transformers_report(fp_run, exports / "packed", n_tokens=256)
    print("\n" + format_agreement("transformers (block 0 nn.Linear) vs bitjax A8", r["vs_a8"]))
    assert r["vs_a8"]["argmax_agreement"] >= 0.99
    assert r["vs_a8"]["argmax_agreement_clear"] == 1.0
    assert r["vs_a8"]["ppl_rel_diff"] <= 0.01


def test_read_back_catches_a_changed_full_precision_weight(fp_run, tmp_path, monkeypatch):
    model = TernaryModel.from_run(load_run(fp_run))
    real = gguf_writer._dense_plan

    def off_by_one_ulp(model_, path, np_dtype=np.float32):
        planned = real(model_, path, np_dtype)
        if path != "layers.0.mlp.up_proj":
            return planned
        produce = planned.produce
        return planned.__class__(planned.name, planned.byte_shape, planned.np_dtype, planned.raw_dtype,
                                 lambda: np.nextafter(produce(), np.float16(np.inf)))

    monkeypatch.setattr(gguf_writer, "_dense_plan", off_by_one_ulp)
    with pytest.raises(ExportError, match=r"blk\.0\.ffn_up\.weight \(a full-precision block's linear\) reads back"):
        gguf_writer.write_gguf(model, tmp_path / "x.gguf", "tq2_0", embedding_type="f16")
    assert list(tmp_path.iterdir()) == []
