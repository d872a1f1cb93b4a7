"""recipes/r1_distill_qwen_ternary.py end to end at a tiny width, its checkpoint replaced by a random model.

The recipe's source is DeepSeek-R1-Distill-Qwen-1.5B, not shipped. Here it is a random `Qwen2ForCausalLM` of
the same architecture (q/k/v biases, untied head, head width 128, RMSNorm eps 1e-6, RoPE theta 10,000) two
blocks deep and 256 wide, with an R1-style tokenizer (Qwen2's split regex, `<｜end▁of▁sentence｜>` and no
`<|endoftext|>`): `bitjax train` with the recipe's online self-distillation and the quantization ramped to
lambda 1, then `bitjax export` to a `qwen2` GGUF (TQ2_0, llama.cpp's `qwen2` pre-tokenizer) and a packed
`Qwen2ForCausalLM`. tests/pretrained/test_convert_architectures.py runs such exports in both runtimes.
"""

import json

import gguf
import pytest

from bitjax.config import apply_overrides, load_recipe
from bitjax.export import export_run
from bitjax.training import train
from tests.support import RECIPES
from tests.support.tokenizers import BOUNDARY, family_tokenizer

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

RECIPE = RECIPES / "r1_distill_qwen_ternary.py"


def _random_r1(directory, vocab_size: int) -> None:
    torch.manual_seed(0)
    config = transformers.Qwen2Config(vocab_size=vocab_size, hidden_size=256, intermediate_size=512,
                                      num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                                      head_dim=128, max_position_embeddings=512, rms_norm_eps=1e-6,
                                      tie_word_embeddings=False, use_sliding_window=False)
    config.rope_parameters = {"rope_type": "default", "rope_theta": 10_000.0}
    transformers.Qwen2ForCausalLM(config).save_pretrained(directory, safe_serialization=True)


def test_the_recipe_converts_distils_online_and_exports_a_qwen2_student(tmp_path):
    base = load_recipe(RECIPE)
    m = base.model
    assert (m.attention_bias, m.tie_embeddings, m.sub_norms, m.qk_norm) == (True, False, False, False)
    assert base.init_from == base.distill.teacher and base.distill.online
    assert base.steps * base.data.batch_size * base.data.seq_len >= 10e9   # BitDistill's 10B tokens

    source = tmp_path / "r1-tiny"
    source.mkdir()
    family_tokenizer(source / "tokenizer.json", "qwen2")
    _random_r1(source, 1024)
    cfg = apply_overrides(base, [
        f"init_from=hf:{source}", f"distill.teacher=hf:{source}", f"data.tokenizer={source / 'tokenizer.json'}",
        "data.seq_len=64", "model.vocab_size=1024", "model.d_model=256", "model.n_layers=2", "model.n_heads=2",
        "model.n_kv_heads=1", "model.d_ff=512", "model.max_seq_len=512", "model.dtype=float32", "model.remat=none",
        "data.batch_size=2", "steps=2", "quant_warmup_steps=1", "eval_batches=1", "eval_every=2", "log_every=1",
        "checkpoint.every=2", "optim.warmup_steps=1"])
    train(cfg, tmp_path / "run", progress=False)
    history = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    kd = [r["kd"] for r in history if "kd" in r]
    assert kd and all(k == k and k >= 0 for k in kd)   # the online teacher's KD term ran, finite

    result = export_run(tmp_path / "run", tmp_path / "student.gguf", format="gguf")
    reader = gguf.GGUFReader(tmp_path / "student.gguf")
    assert result["architecture"] == reader.get_field("general.architecture").contents() == "qwen2"
    assert reader.get_field("tokenizer.ggml.pre").contents() == "qwen2"
    names = {t.name for t in reader.tensors}
    assert {"output.weight", "blk.0.attn_q.bias", "blk.1.attn_v.bias"} <= names
    eos = reader.get_field("tokenizer.ggml.eos_token_id").contents()
    assert reader.get_field("tokenizer.ggml.tokens").contents()[eos] == BOUNDARY["qwen2"]
    export_run(tmp_path / "run", tmp_path / "packed", format="packed")
    config = json.loads((tmp_path / "packed" / "config.json").read_text())
    assert config["architectures"] == ["Qwen2ForCausalLM"] and config["tie_word_embeddings"] is False
