
import jax
import numpy as np
import pytest

from bitjax.config import apply_overrides, load_recipe
from bitjax.errors import ConfigError
from bitjax.teachers.backends import BitjaxTeacher, open_teacher, topk_from_logits
from tests.support import KD_TINY, TINY


def test_topk_from_logits_masses_add_up():
    logits = np.random.default_rng(0).normal(size=(2, 3, 50)) * 4
    ids, top, tail = topk_from_logits(logits, 5)
    assert ids.shape == (2, 3, 5) and top.shape == (2, 3, 5) and tail.shape == (2, 3)
    np.testing.assert_allclose(np.exp(top).sum(-1) + np.exp(tail), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(ids, np.argsort(-logits, axis=-1)[..., :5])
    assert np.all(np.diff(top, axis=-1) <= 0)
    _, _, none_left = topk_from_logits(logits, 50)
    assert np.all(np.isneginf(none_left))


def test_topk_refuses_nan():
    logits = np.zeros((1, 2, 4))
    logits[0, 1, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        topk_from_logits(logits, 2)


def test_bitjax_backend_matches_direct_forward(tmp_path):
    from bitjax.training import Trainer, train
    from bitjax.training.checkpointer import Checkpointer

    cfg = apply_overrides(load_recipe(TINY), ["model.n_layers=1", "data.seq_len=32", "data.batch_size=4",
                                              "steps=3", "eval_batches=1"])
    train(cfg, tmp_path, progress=False)
    teacher = open_teacher(f"bitjax:{tmp_path}")
    assert isinstance(teacher, BitjaxTeacher) and teacher.vocab_size == cfg.model.vocab_size
    tokens = np.random.default_rng(1).integers(0, 2000, (2, 32)).astype(np.int32)
    ids, _, _ = teacher.topk(tokens, 8)
    trainer = Trainer.create(cfg)
    ck = Checkpointer(tmp_path / "checkpoints", cfg)
    state = ck.restore_state(3, trainer.abstract_state())
    logits = np.asarray(trainer.model(state.params)(tokens))
    np.testing.assert_array_equal(ids, np.asarray(jax.lax.top_k(logits, 8)[1]))


def test_hf_backend_matches_direct_forward(tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config)
    model.save_pretrained(tmp_path)
    teacher = open_teacher(f"hf:{tmp_path}")
    tokens = np.random.default_rng(2).integers(0, 128, (2, 20)).astype(np.int32)
    ids, logp, _ = teacher.topk(tokens, 6)
    with torch.no_grad():
        direct = model(input_ids=torch.as_tensor(tokens, dtype=torch.long)).logits
    np.testing.assert_array_equal(ids, torch.topk(direct, 6, dim=-1).indices.numpy())
    np.testing.assert_allclose(logp, torch.log_softmax(direct, -1).topk(6, dim=-1).values.numpy(), atol=1e-5)


def test_unknown_teacher_spec():
    with pytest.raises(ConfigError, match="write gguf:PATH, gguf:ORG/NAME/FILE.gguf, gguf:smollm2, hf:DIR, "
                                          "hf:ORG/NAME or bitjax:RUN_DIR$"):
        open_teacher("onnx:model")
    with pytest.raises(ConfigError, match="/nonexistent.gguf does not exist"):
        open_teacher("gguf:/nonexistent.gguf")


def test_cache_teacher_command_with_a_bitjax_teacher(tmp_path, capsys):
    from bitjax.cli import main
    from bitjax.data.teacher_files.topk_cache import TopKCache
    from bitjax.training import train

    small = ["--set", "model.n_layers=1", "--set", "data.seq_len=32", "--set", "data.batch_size=4"]
    cfg = apply_overrides(load_recipe(TINY), [s for s in small if s != "--set"] + ["steps=2", "eval_batches=1"])
    train(cfg, tmp_path / "teacher", progress=False)
    out = tmp_path / "cache"
    assert main(["cache-teacher", KD_TINY, "--teacher", f"bitjax:{tmp_path / 'teacher'}", "--out", str(out),
                 "--k", "4", "--examples", "10", "--shards", "2", *small]) == 0
    printed = capsys.readouterr().out
    assert "natural: 6 sequences" in printed and "rephrased: 4 sequences" in printed and "bytes/token" in printed
    cache = TopKCache(out / "natural")
    assert len(cache) == 6 and cache.spec.k == 4 and cache.spec.seq_len == 32
    teacher = open_teacher(f"bitjax:{tmp_path / 'teacher'}")
    rec = cache[0]
    segment = rec["segment_ids"] == rec["segment_ids"][0]
    ids, _, _ = teacher.topk(rec["inputs"][segment][None], 4)
    np.testing.assert_array_equal(rec["teacher_ids"][segment], ids[0])


def test_cache_teacher_needs_a_distilled_source(tmp_path, capsys):
    from bitjax.cli import main
    assert main(["cache-teacher", TINY, "--teacher", "bitjax:x", "--out", str(tmp_path / "c")]) == 2
    assert "no data source with objective 'kd'" in capsys.readouterr().err


def test_cache_teacher_refuses_a_teacher_with_another_vocabulary(tmp_path, capsys):
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from bitjax.cli import main
    config = transformers.LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                      num_attention_heads=2, num_key_value_heads=1)
    transformers.LlamaForCausalLM(config).save_pretrained(tmp_path / "hf")
    code = main(["cache-teacher", KD_TINY, "--teacher", f"hf:{tmp_path / 'hf'}", "--out", str(tmp_path / "c")])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("bitjax: error")]
    assert code == 2 and len(errors) == 1 and "vocabulary of 100 tokens" in errors[0]
    assert not (tmp_path / "c").exists()


def test_gguf_backend_matches_direct_forward(trained_run, tmp_path):
    """An F32 GGUF export read by llama.cpp gives the top-k of bitjax's own (W1.58A16) forward."""
    pytest.importorskip("llama_cpp")
    from bitjax.export import export_run
    from bitjax.export.model_source import load_run
    from bitjax.export.reference import bitjax_logits, heldout_tokens

    gguf = tmp_path / "model-f32.gguf"
    export_run(trained_run, gguf, format="gguf", gguf_type="f32")
    teacher = open_teacher(f"gguf:{gguf}")
    run = load_run(trained_run)
    tokens = heldout_tokens(run, 48)
    ids, logp, tail = teacher.topk(tokens[None], 4)
    direct = bitjax_logits(run, tokens, quantize_activations=False)
    np.testing.assert_array_equal(ids[0, :, 0], direct.argmax(-1))
    direct_ids = np.argsort(-direct, axis=-1)[:, :4]
    assert np.mean(ids[0] == direct_ids) > 0.98   # ranks 2-4 may swap where logits tie to 1e-3
    np.testing.assert_allclose(np.exp(logp).sum(-1) + np.exp(tail), 1.0, rtol=1e-4)


def test_gguf_backend_runs_the_embedded_teacher():
    pytest.importorskip("llama_cpp")
    teacher = open_teacher("gguf:smollm2")
    assert teacher.vocab_size == 49152
    tokens = np.array([teacher.llm.tokenize(b"The capital of France is", add_bos=False)], np.int32)
    ids, logp, tail = teacher.topk(tokens, 5)
    assert ids.shape == (1, tokens.shape[1], 5)
    np.testing.assert_allclose(np.exp(logp).sum(-1) + np.exp(tail), 1.0, rtol=1e-4)
    assert teacher.llm.detokenize([int(ids[0, -1, 0])]).strip().lower() == b"paris"
