"""Hugging Face checkpoints imported into bitjax compute what transformers computes.

Small randomly initialised LlamaForCausalLM (untied head), Qwen2ForCausalLM (q/k/v biases) and
BitNetForCausalLM (relu2, SubLN norms) are saved with transformers and imported; the logits of the bitjax
model equal transformers' in float32.
"""

import json

import numpy as np
import pytest

from bitjax.errors import ConfigError, ExportError

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

SMALL = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-5, rope_theta=10000.0)


def _save(tmp_path, config_cls, model_cls, **kw):
    torch.manual_seed(0)
    config = getattr(transformers, config_cls)(**{**SMALL, **kw})
    model = getattr(transformers, model_cls)(config).eval()
    with torch.no_grad():   # random biases and norm scales, so that a wrong mapping shows in the logits
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(tmp_path, safe_serialization=True)
    return model


@pytest.mark.parametrize("config_cls, model_cls, kw", [
    ("LlamaConfig", "LlamaForCausalLM", dict(tie_word_embeddings=False)),
    ("Qwen2Config", "Qwen2ForCausalLM", dict(tie_word_embeddings=True)),
    ("BitNetConfig", "BitNetForCausalLM", dict(tie_word_embeddings=True, hidden_act="relu2")),
])
def test_imported_logits_equal_transformers(tmp_path, config_cls, model_cls, kw):
    from bitjax.pretrained import hf_model, hf_model_config

    hf = _save(tmp_path, config_cls, model_cls, **kw)
    tokens = np.random.default_rng(0).integers(0, SMALL["vocab_size"], (2, 17))
    with torch.no_grad():
        want = hf(input_ids=torch.as_tensor(tokens)).logits.float().numpy()
    got = np.asarray(hf_model(tmp_path)(tokens.astype(np.int32)))
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)
    cfg = hf_model_config(tmp_path)
    assert cfg.quant == "none" and cfg.tie_embeddings == kw["tie_word_embeddings"]


def test_unsupported_architecture_and_mismatched_shapes_are_one_line(tmp_path):
    from bitjax.pretrained import hf_model, hf_model_config

    _save(tmp_path, "LlamaConfig", "LlamaForCausalLM")
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "model_type": "gpt2"}))
    with pytest.raises(ConfigError, match="model_type 'gpt2' is not supported; bitjax imports llama"):
        hf_model_config(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**config, "rope_scaling": {"rope_type": "llama3"}}))
    with pytest.raises(ConfigError, match="rope_scaling .* is not implemented"):
        hf_model_config(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**config, "intermediate_size": 80}))
    with pytest.raises(ConfigError, match=r"tensor model.layers.0.mlp.down_proj.weight has shape \(64, 96\), "
                                          r"config.json implies \(64, 80\)"):
        hf_model(tmp_path)


def test_an_imported_llama_is_refused_by_the_exporter_in_one_line(tmp_path):
    from bitjax.export.model_source import TernaryModel
    from bitjax.pretrained import load_hf

    _save(tmp_path, "LlamaConfig", "LlamaForCausalLM", tie_word_embeddings=False)
    cfg, params = load_hf(tmp_path)
    import dataclasses

    from bitjax.export.model_source import flatten_params
    with pytest.raises(ExportError, match="model.sub_norms=false, model.tie_embeddings=false"):
        TernaryModel.from_params(dataclasses.replace(cfg, quant="ternary"), flatten_params(params))
