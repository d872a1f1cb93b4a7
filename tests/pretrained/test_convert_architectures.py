"""The conversion round trip in the source's own architecture, for each one bitjax exports that way.

A transformers model (trained 25 steps in torch so that its predictions decide) is imported, converted into a
ternary student without SubLN (`init_from`, `student_config(sub_norms=False)`), trained a few steps with the
quantization ramped to lambda 1 (`bitjax train`), then exported by `bitjax export` to GGUF TQ2_0 and TQ1_0 and
to the packed format, and run by the existing runtime checks (bitjax.export.runtime_report) against bitjax's
own forward on held-out text, with the bounds every export is held to (tests/export/test_export_gguf.py,
tests/export/test_export_packed.py): every argmax without a near-tie equal, perplexity within 0.1% (llama.cpp)
and 1% (transformers).

    llama   LlamaForCausalLM, Llama 3.x RoPE scaling (llama3, factor 8 over an original context of 16)
    qwen2   Qwen2ForCausalLM: q/k/v biases and an untied head (DeepSeek-R1-Distill-Qwen's architecture)
    qwen3   Qwen3ForCausalLM: per-head q/k norms, head width 128 (not d_model / heads), untied head, YaRN

Tiny widths run in the default lane; the slow lane repeats qwen2 at DeepSeek-R1-Distill-Qwen-1.5B's widths
(1536 wide, 12 / 2 heads of 128, FFN 8960), two blocks.
"""

import dataclasses

import gguf
import pytest

from bitjax.config import apply_overrides, load_recipe
from bitjax.errors import ExportError
from bitjax.export import export_run, gguf_writer, hf_packed
from bitjax.export.runtime_report import format_agreement, llama_cpp_report, transformers_report
from bitjax.pretrained.hf import hf_model_config
from bitjax.pretrained.init_from import student_config
from bitjax.run import Run
from bitjax.training import train
from tests.support import TINY
from tests.support.hf_models import shakespeare_ids, trained_hf_model
from tests.support.random_models import random_model

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("llama_cpp")

SHAPE = dict(hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, head_dim=64, max_position_embeddings=256, rms_norm_eps=1e-5)
SOURCES = {   # name -> (config class, model class, config keywords, rope_parameters)
    "llama": ("LlamaConfig", "LlamaForCausalLM", dict(SHAPE, tie_word_embeddings=True),
              {"rope_type": "llama3", "rope_theta": 50_000.0, "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 16}),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", dict(SHAPE, tie_word_embeddings=False),
              {"rope_type": "default", "rope_theta": 10_000.0}),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", dict(SHAPE, head_dim=128, tie_word_embeddings=False),
              {"rope_type": "yarn", "rope_theta": 1_000_000.0, "factor": 4.0,
               "original_max_position_embeddings": 16}),
    "qwen2_r1_widths": ("Qwen2Config", "Qwen2ForCausalLM",
                        dict(SHAPE, hidden_size=1536, intermediate_size=8960, num_attention_heads=12,
                             num_key_value_heads=2, head_dim=128, tie_word_embeddings=False),
                        {"rope_type": "default", "rope_theta": 10_000.0}),
}


def convert_and_train(source_dir, workdir, steps: int = 3):
    """`bitjax train` of the tiny recipe's data on a student converted from `source_dir` without SubLN: the
    quantization ramps over steps - 1 steps, so the last step runs at lambda 1 and the run may be exported."""
    cfg = apply_overrides(load_recipe(TINY), [   # the int8 matmul holds lambda at 1: off before the ramp is set
        "model.int8_matmul=false", f"init_from=hf:{source_dir}", f"steps={steps}", f"quant_warmup_steps={steps - 1}",
        "data.seq_len=64", "data.batch_size=4", "log_every=1", f"eval_every={steps}", "eval_batches=1",
        "optim.warmup_steps=1", "optim.peak_lr=1e-4", "optim.stage2_peak_lr=5e-5", f"checkpoint.every={steps}"])
    cfg = dataclasses.replace(cfg, model=student_config(hf_model_config(source_dir), sub_norms=False))
    train(cfg, workdir, progress=False)
    return Run(workdir)


def round_trip(trained_run, tmp_path, source: str) -> dict:
    config_cls, model_cls, config, rope = SOURCES[source]
    train_ids, _ = shakespeare_ids(trained_run / "tokenizer.json")
    trained_hf_model(tmp_path / "hf", train_ids, config_cls, model_cls, rope_parameters=rope, **config)
    run = convert_and_train(tmp_path / "hf", tmp_path / "run")
    figures = {}
    for gguf_type in ("tq2_0", "tq1_0"):
        path = tmp_path / f"student-{gguf_type}.gguf"
        result = export_run(run.dir, path, format="gguf", gguf_type=gguf_type, embedding_type="f16")
        assert result["architecture"] == gguf.GGUFReader(path).get_field("general.architecture").contents()
        report = llama_cpp_report(run, path, n_tokens=128, n_greedy=4)
        assert report["tokenizer_identical"] == report["tokenizer_probes"]
        figures[f"llama.cpp {gguf_type} vs A8"] = report["vs_a8"]
    export_run(run.dir, tmp_path / "packed", format="packed")
    figures["transformers packed vs A8"] = transformers_report(run, tmp_path / "packed", n_tokens=128)["vs_a8"]
    print("\n" + "\n".join(format_agreement(f"{source} ({result['architecture']}): {label}", f)
                           for label, f in figures.items()))
    return {"architecture": result["architecture"], **figures}


def check_bounds(figures: dict) -> None:
    for label, f in figures.items():
        if label == "architecture":
            continue
        assert f["argmax_agreement_clear"] == 1.0, label
        assert f["clear_positions"] >= 64, label   # a trained source decides most positions
        assert f["ppl_rel_diff"] <= (1e-3 if label.startswith("llama.cpp") else 1e-2), label


@pytest.mark.parametrize("source", ["llama", "qwen2", "qwen3"])
def test_a_student_without_subln_exports_in_its_source_architecture_and_runs_alike(trained_run, tmp_path, source):
    figures = round_trip(trained_run, tmp_path, source)
    assert figures["architecture"] == source
    check_bounds(figures)


@pytest.mark.slow
def test_the_round_trip_at_r1_distill_qwen_widths(trained_run, tmp_path):
    figures = round_trip(trained_run, tmp_path, "qwen2_r1_widths")
    assert figures["architecture"] == "qwen2"
    check_bounds(figures)


def test_a_student_with_subln_and_a_qwen2_source_is_refused_in_one_line_naming_the_fix(trained_run, tmp_path):
    """SubLN makes the student a bitnet model, whose runtimes have no place for biases or an untied head: both
    formats refuse it before writing anything, and say how to get an export (no SubLN)."""
    _, _, model = random_model(trained_run / "tokenizer.json", sub_norms=True, attention_bias=True,
                               tie_embeddings=False)
    for fmt, write in (("GGUF", lambda: gguf_writer.write_gguf(model, tmp_path / "x.gguf", "tq2_0")),
                       ("transformers' packed format", lambda: hf_packed.write_packed(model, tmp_path / "packed"))):
        with pytest.raises(ExportError, match=rf"^the student has q/k/v biases \(model.attention_bias\), which the "
                                              rf"bitnet architecture has no place for in {fmt}; train the student "
                                              r"without SubLN \(model.sub_norms=false\)") as e:
            write()
        assert "\n" not in str(e.value)
    assert list(tmp_path.iterdir()) == []
