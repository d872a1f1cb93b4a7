"""`bitjax export --format web` and `bitjax serve` without a browser: the folder, split files, chat format, errors.

(tests/export/test_export_web_browser.py runs the page in Chromium.) The exports that need the npm runtime skip,
naming the npm step, where it is not installed; .ci/run installs it.
"""

import json
import re
import shutil
import urllib.request

import gguf
import numpy as np
import pytest

from bitjax.cli import main
from bitjax.config import DataConfig, SourceConfig, TrainConfig
from bitjax.errors import ExportError
from bitjax.export import llama_check, web_prompt, web_runtime, web_vocab
from bitjax.export.gguf_split import split_gguf
from bitjax.export.gguf_writer import write_gguf
from bitjax.export.web import MANIFEST
from bitjax.export.web_driver import served
from bitjax.export.web_serve import make_server
from tests.support.random_models import random_model


def _runtime_missing() -> str | None:
    try:
        web_runtime.find_runtime()
    except ExportError as e:
        return str(e)
    return None


needs_runtime = pytest.mark.skipif(_runtime_missing() is not None, reason=f"npm runtime: {_runtime_missing()}")


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("bitjax: error: ") and "\n" not in err, err
    return err


def _copy_run(trained_run, tmp_path, name):
    copy = tmp_path / name
    shutil.copytree(trained_run, copy)
    return copy


def test_bad_inputs_are_one_line_errors_with_exit_code_2(trained_run, tmp_path, capsys, monkeypatch):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    assert main(["export", str(trained_run), str(taken), "--format", "web"]) == 2
    assert "already exists; pass --force" in _error(capsys)
    assert main(["export", str(trained_run), str(taken), "--format", "web", "--force"]) == 2
    assert "is not a bitjax web export" in _error(capsys) and (taken / "notes.txt").read_text() == "mine"

    assert main(["export", str(trained_run), str(trained_run), "--format", "web", "--force"]) == 2
    assert "overlaps the run directory" in _error(capsys) and (trained_run / "checkpoints").is_dir()

    relu2 = _copy_run(trained_run, tmp_path, "relu2")
    config = json.loads((relu2 / "config.json").read_text())
    config["config"]["model"]["ffn_activation"] = "relu2"   # the check reads the config, before any restore
    (relu2 / "config.json").write_text(json.dumps(config))
    assert main(["export", str(relu2), str(tmp_path / "w1"), "--format", "web"]) == 2
    err = _error(capsys)
    assert "relu2" in err and "recipes/bitnet_125m_silu.py" in err and not (tmp_path / "w1").exists()

    no_tokenizer = _copy_run(trained_run, tmp_path, "no-tokenizer")
    (no_tokenizer / "tokenizer.json").unlink()
    assert main(["export", str(no_tokenizer), str(tmp_path / "w2"), "--format", "web"]) == 2
    assert "tokenizer.json is missing" in _error(capsys) and not (tmp_path / "w2").exists()

    monkeypatch.setenv("BITJAX_WEB_RUNTIME", str(tmp_path / "no-npm-here"))
    assert main(["export", str(trained_run), str(tmp_path / "w3"), "--format", "web"]) == 2
    assert f"npm install --prefix {tmp_path / 'no-npm-here'}" in _error(capsys) and not (tmp_path / "w3").exists()

    assert main(["export", str(trained_run), str(tmp_path / "w4"), "--format", "web", "--split-mb", "0"]) == 2
    assert "--split-mb 0" in _error(capsys)
    assert main(["export", str(trained_run), str(tmp_path / "m.gguf"), "--format", "gguf", "--split-mb", "5"]) == 2
    assert "--split-mb applies to --format web only" in _error(capsys)
    assert main(["export", str(relu2), str(tmp_path / "w5"), "--format", "web", "--allow-runtime-mismatch"]) == 2
    assert "--allow-runtime-mismatch does not apply to --format web" in _error(capsys)


@needs_runtime
def test_web_folder_holds_the_gguf_export_the_runtime_and_the_page(trained_run, tmp_path, capsys):
    out = tmp_path / "site"
    assert main(["export", str(trained_run), str(out), "--format", "web", "--type", "tq1_0"]) == 0
    assert "bitjax serve" in capsys.readouterr().out
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["files"] == ["model.gguf"] and manifest["type"] == "tq1_0" and manifest["chat"] is None
    assert manifest["bytes"] == (out / "model.gguf").stat().st_size
    banned = manifest["banned_tokens"]   # the byte tokens 0x80-0xFF of the tiny BPE, at least
    assert banned == web_vocab.partial_text_tokens(out / "model.gguf") and len(banned) >= 128
    # the same bytes `--format gguf` writes with the same options
    assert main(["export", str(trained_run), str(tmp_path / "m.gguf"), "--format", "gguf", "--type", "tq1_0"]) == 0
    assert (out / "model.gguf").read_bytes() == (tmp_path / "m.gguf").read_bytes()
    package = web_runtime.find_runtime()
    for source, destination in web_runtime.DESTINATIONS.items():
        assert (out / destination).read_bytes() == (package / source).read_bytes()
    page = (out / "index.html").read_text()
    assert "setCompat(null)" in page and "./wllama/wllama.wasm" in page
    assert not re.search(r"https?://\w", page), "the page names an outside address"   # nothing comes from elsewhere
    assert "Cross-Origin-Embedder-Policy: require-corp" in (out / "_headers").read_text()

    (out / "stale.txt").write_text("x")   # --force replaces an earlier web export whole
    assert main(["export", str(trained_run), str(out), "--format", "web", "--force", "--split-mb", "0.5"]) == 0
    manifest = json.loads((out / MANIFEST).read_text())
    assert not (out / "stale.txt").exists() and len(manifest["files"]) >= 2
    assert manifest["files"][0].endswith(f"-00001-of-{len(manifest['files']):05d}.gguf")


def test_split_files_load_in_llama_cpp_as_the_single_file(tmp_path):
    from benchmarks.export import make_tokenizer

    tokenizer = make_tokenizer(tmp_path)
    _, _, model = random_model(tokenizer_path=tokenizer, vocab_size=512, n_layers=2)
    single = write_gguf(model, tmp_path / "single" / "model.gguf", "tq2_0", embedding_type="q8_0")
    shutil.copytree(tmp_path / "single", tmp_path / "split")
    files = split_gguf(tmp_path / "split" / "model.gguf", 150_000)
    assert [f.name for f in files] == [f"model-{i:05d}-of-{len(files):05d}.gguf" for i in range(1, len(files) + 1)]
    assert len(files) >= 2 and all(sum(int(t.n_bytes) for t in gguf.GGUFReader(f).tensors) <= 150_000 for f in files)
    assert split_gguf(tmp_path / "single" / "model.gguf", 10**9) == [tmp_path / "single" / "model.gguf"]
    with pytest.raises(ExportError, match="raise --split-mb"):
        split_gguf(tmp_path / "single" / "model.gguf", 1000)
    tokens = list(range(5, 37))
    whole, parts = llama_check.open_model(single, 64), llama_check.open_model(files[0], 64)
    try:
        np.testing.assert_array_equal(llama_check.llama_logits(whole, tokens), llama_check.llama_logits(parts, tokens))
    finally:
        whole.close()
        parts.close()


def test_chat_format_is_the_text_the_trace_prompts_put_around_their_questions(tmp_path):
    records = [{"question": q, "prompt": f"<s>user\n{q}</s>\n<s>assistant\n"} for q in ("2+2?", "3+5?")]
    assert web_prompt.wrapping(records) == ("<s>user\n", "</s>\n<s>assistant\n")
    assert web_prompt.wrapping(records + [{"question": "1+1?", "prompt": "Q: 1+1?"}]) is None
    assert web_prompt.wrapping([{"question": "x", "prompt": "x x"}]) is None   # ambiguous: the question twice

    traces = tmp_path / "traces.jsonl"
    lines = [{"id": f"t/{i}", "prompt_id": f"t/{i}", "split": "train", "question": f"What is {i}+1?",
              "gold": str(i + 1), "prompt": f"<s>user\nWhat is {i}+1?</s>\n<s>assistant\n",
              "completion": f"Answer: {i + 1}", "label": "positive"} for i in range(3)]
    traces.write_text("".join(json.dumps(r) + "\n" for r in lines))
    cfg = TrainConfig(data=DataConfig(sources=(SourceConfig("text", "tfds:shakespeare"),
                                               SourceConfig("sft", f"traces:{traces}", objective="sft"))))
    chat, note = web_prompt.chat_format(cfg)
    assert note is None and chat.wrap("Hi") == "<s>user\nHi</s>\n<s>assistant\n"
    moved = TrainConfig(data=DataConfig(sources=(SourceConfig("sft", f"traces:{tmp_path}/gone.jsonl",
                                                              objective="sft"),)))
    chat, note = web_prompt.chat_format(moved)
    assert chat is None and "gone.jsonl" in note
    assert web_prompt.chat_format(TrainConfig()) == (None, None)


def test_serve_sends_isolation_headers_and_refuses_other_folders(tmp_path, capsys):
    site = tmp_path / "site"
    (site / "wllama").mkdir(parents=True)
    (site / MANIFEST).write_text("{}")
    (site / "wllama" / "wllama.wasm").write_bytes(b"\0asm")
    with served(site) as url:
        with urllib.request.urlopen(url + "wllama/wllama.wasm") as response:
            assert response.headers["Content-Type"] == "application/wasm"
            assert response.headers["Cross-Origin-Opener-Policy"] == "same-origin"
            assert response.headers["Cross-Origin-Embedder-Policy"] == "require-corp"
    with pytest.raises(ExportError, match="is not a web export"):
        make_server(tmp_path, port=0)
    assert main(["serve", str(tmp_path)]) == 2
    assert "is not a web export" in _error(capsys)
