"""Qwen3 and Llama 3.x (and RoPE's linear and YaRN scalings) imported into bitjax compute what transformers computes.

Small random `Qwen3ForCausalLM` (per-head q/k norms, a head width that is not hidden / heads, tied and untied
heads) and `LlamaForCausalLM` with Llama 3.x's `llama3` RoPE scaling are built with transformers on CPU at a
RoPE theta that is not the default, and run over more positions than their original context, so the scaling
decides the logits; the imports equal transformers' logits to 1e-4 in float32, from the Hugging Face directory
and from the same network written as GGUF with the gguf library (tests/support/hf_gguf.py).
"""

import dataclasses
import json

import numpy as np
import pytest

from bitjax.errors import ConfigError
from bitjax.nn.rope import RopeScaling
from tests.support.hf_gguf import write_gguf

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

SMALL = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-5)
THETA = 50_000.0       # not the default 10,000
ORIGINAL = 16          # the "pretraining" context; the tests run 40 positions
LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": ORIGINAL}
YARN = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": ORIGINAL}
LINEAR = {"rope_type": "linear", "factor": 2.0}

CASES = {   # name -> (config class, model class, GGUF architecture, RoPE scaling, config keywords)
    "qwen3_tied": ("Qwen3Config", "Qwen3ForCausalLM", "qwen3", {}, dict(head_dim=32, tie_word_embeddings=True)),
    "qwen3_untied_yarn": ("Qwen3Config", "Qwen3ForCausalLM", "qwen3", YARN,
                          dict(head_dim=32, tie_word_embeddings=False)),
    "llama3": ("LlamaConfig", "LlamaForCausalLM", "llama", LLAMA3, dict(tie_word_embeddings=False)),
    "llama_linear": ("LlamaConfig", "LlamaForCausalLM", "llama", LINEAR, dict(tie_word_embeddings=True)),
}


def _save(directory, case):
    config_cls, model_cls, _, scaling, kw = CASES[case]
    torch.manual_seed(0)
    config = getattr(transformers, config_cls)(**{**SMALL, **kw})
    config.rope_parameters = {**scaling, "rope_type": scaling.get("rope_type", "default"), "rope_theta": THETA}
    model = getattr(transformers, model_cls)(config).eval()
    with torch.no_grad():   # norm scales away from 1, so that a q/k norm read from the wrong tensor shows
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(directory, safe_serialization=True)
    return model


def _logits(model, tokens_BL):
    with torch.no_grad():
        return model(input_ids=torch.as_tensor(tokens_BL)).logits.float().numpy()


@pytest.mark.parametrize("case", list(CASES))
def test_imported_logits_equal_transformers_from_hf_and_from_gguf(tmp_path, case):
    from bitjax.pretrained.gguf import gguf_model, gguf_model_config
    from bitjax.pretrained.hf import hf_model_config, load_hf, merged_model

    hf = _save(tmp_path / "hf", case)
    tokens = np.random.default_rng(0).integers(0, SMALL["vocab_size"], (2, 40))
    want = _logits(hf, tokens)
    cfg, params = load_hf(tmp_path / "hf")
    np.testing.assert_allclose(np.asarray(merged_model(cfg, params)(tokens.astype(np.int32))), want,
                               atol=1e-4, rtol=1e-4)
    write_gguf(hf, tmp_path / "m.gguf", CASES[case][2])
    np.testing.assert_allclose(np.asarray(gguf_model(tmp_path / "m.gguf")(tokens.astype(np.int32))), want,
                               atol=1e-4, rtol=1e-4)

    kw, scaling = CASES[case][4], CASES[case][3]
    hf_cfg, gguf_cfg = hf_model_config(tmp_path / "hf"), gguf_model_config(tmp_path / "m.gguf")
    for c in (hf_cfg, gguf_cfg):
        assert c.rope_theta == THETA and c.tie_embeddings == kw["tie_word_embeddings"]
        assert c.qk_norm == case.startswith("qwen3") and c.head_dim == kw.get("head_dim", 16)
    assert hf_cfg.rope_scaling.kind == {"llama3": "llama3", "yarn": "yarn", "linear": "linear"}.get(
        scaling.get("rope_type"), "none")
    # The GGUF keeps Llama 3.x's scaling as per-pair factors; the HF import computes the same frequencies.
    if scaling.get("rope_type") == "llama3":
        assert gguf_cfg.rope_scaling.kind == "freq_factors"
    if scaling:   # the scaling matters at these positions: dropping it moves the logits 10x the tolerance or more
        plain = merged_model(dataclasses.replace(cfg, rope_scaling=RopeScaling()), params)
        assert np.abs(np.asarray(plain(tokens.astype(np.int32))) - want).max() > 1e-3


def _write_config(tmp_path, **changes):
    _save(tmp_path, "qwen3_tied")
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, **changes}))


@pytest.mark.parametrize("changes, message", [
    ({"rope_parameters": {"rope_type": "longrope", "rope_theta": THETA, "short_factor": [1.0]}},
     "RoPE scaling 'longrope' is not supported; bitjax computes linear, llama3, yarn scaling"),
    ({"rope_scaling": {"type": "dynamic", "factor": 2.0}}, "RoPE scaling 'dynamic' is not supported"),
    ({"model_type": "qwen3_moe", "num_experts": 8}, "model_type 'qwen3_moe' is a mixture of experts"),
    ({"use_sliding_window": True, "sliding_window": 8}, r"sliding-window attention \(sliding_window=8\) is not "
                                                         "implemented"),
    ({"layer_types": ["full_attention", "sliding_attention"], "sliding_window": 8}, "sliding-window attention"),
])
def test_unsupported_qwen3_checkpoints_are_one_line(tmp_path, changes, message):
    from bitjax.pretrained.hf import hf_model_config

    _write_config(tmp_path, **changes)
    with pytest.raises(ConfigError, match=message) as e:
        hf_model_config(tmp_path)
    assert "\n" not in str(e.value)


def test_a_gguf_without_an_architecture_key_is_one_line(tmp_path):
    import gguf

    from bitjax.pretrained.gguf import load_gguf

    path = tmp_path / "bare.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_tensor("token_embd.weight", np.zeros((8, 16), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    # gguf's writer always adds general.architecture; drop that key from the file as a broken converter would
    reader = gguf.GGUFReader(str(path))
    stripped = tmp_path / "stripped.gguf"
    out = gguf.GGUFWriter(str(stripped), "llama")
    out.kv_data[0].pop("general.architecture")
    for t in reader.tensors:
        out.add_tensor(t.name, np.asarray(t.data))
    out.write_header_to_file()
    out.write_kv_data_to_file()
    out.write_tensors_to_file()
    out.close()
    with pytest.raises(ConfigError, match="stripped.gguf: metadata key general.architecture is missing, so nothing "
                                          "says which network the tensors form") as e:
        load_gguf(stripped)
    assert "\n" not in str(e.value)
