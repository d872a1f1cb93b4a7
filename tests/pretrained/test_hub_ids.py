"""Models named by their Hugging Face Hub id (`hf:ORG/NAME[@REVISION]`, `gguf:ORG/NAME/FILE.gguf`).

No test reaches the network: a huggingface_hub cache is laid out by hand in its documented layout
(`models--ORG--NAME/{blobs, refs, snapshots/COMMIT}`) and read with `HF_HUB_OFFLINE=1`, or huggingface_hub's
download functions are replaced by ones that record their calls.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

from bitjax.errors import ConfigError
from bitjax.pretrained import hub
from bitjax.pretrained import spec as model_spec
from tests.support import KD_TINY, ROOT

COMMIT_MAIN, COMMIT_V1 = "a" * 40, "b" * 40


def lay_out_cache(hub_cache: Path, repo: str, snapshots: dict[str, dict[str, Path]], refs: dict[str, str]) -> Path:
    """huggingface_hub's cache layout: files stored once under blobs/, linked from snapshots/COMMIT/, and
    refs/BRANCH_OR_TAG holding the commit a name points at (huggingface.co/docs/huggingface_hub/guides/manage-cache)."""
    root = hub_cache / f"models--{repo.replace('/', '--')}"
    for commit, files in snapshots.items():
        for name, source in files.items():
            blob = root / "blobs" / f"{commit[:8]}-{name.replace('/', '_')}"
            blob.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, blob)
            link = root / "snapshots" / commit / name
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(os.path.relpath(blob, link.parent))
    for ref, commit in refs.items():
        (root / "refs").mkdir(parents=True, exist_ok=True)
        (root / "refs" / ref).write_text(commit)
    return root


def _tiny_hf_model(directory: Path) -> Path:
    """A llama model directory as transformers writes one (config.json, model.safetensors), small."""
    from safetensors.numpy import save_file

    directory.mkdir()
    (directory / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 128, "hidden_size": 64,
        "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "max_position_embeddings": 64, "rms_norm_eps": 1e-5, "rope_theta": 50000.0, "tie_word_embeddings": True}))
    save_file({"model.embed_tokens.weight": np.zeros((128, 64), np.float32)}, str(directory / "model.safetensors"))
    return directory


def _tiny_gguf(path: Path) -> Path:
    """A llama GGUF holding the metadata bitjax reads and an embedding."""
    gguf = pytest.importorskip("gguf")
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_embedding_length(16)
    writer.add_feed_forward_length(32)
    writer.add_head_count(4)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_tensor("token_embd.weight", np.zeros((8, 16), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


# Run in a fresh interpreter: huggingface_hub reads HF_HOME and HF_HUB_OFFLINE when it is imported, as it does
# for a user who sets them in the shell.
OFFLINE_SCRIPT = """
import contextlib, io, json, sys
from bitjax.cli import main
from bitjax.errors import ConfigError
from bitjax.pretrained import spec
from bitjax.pretrained.gguf import gguf_model_config
from bitjax.pretrained.hf import hf_model_config

source_dir, source_gguf, commit = sys.argv[1:4]
out = {}
hf = spec.parse("hf:org/tiny-llama", "init_from")
out["hf"] = str(hf.path)
out["hf_name"] = hf.name
out["pinned"] = str(spec.parse(f"hf:org/tiny-llama@{commit}", "init_from").path)
out["tag"] = str(spec.parse("hf:org/tiny-llama@v1", "init_from").path)
out["same_config"] = spec.model_config(hf) == hf_model_config(source_dir)
g = spec.parse("gguf:org/tiny-gguf/m.gguf", "distill.teacher")
out["gguf"] = str(g.path)
out["gguf_same_config"] = spec.model_config(g) == gguf_model_config(source_gguf)
try:
    spec.parse("hf:org/missing", "init_from")
except ConfigError as e:
    out["missing"] = str(e)
err = io.StringIO()
with contextlib.redirect_stderr(err):
    out["cli_exit"] = main(["cache-teacher", sys.argv[4], "--teacher", "hf:org/missing", "--out", "cache"])
out["cli_stderr"] = err.getvalue()
print(json.dumps(out))
"""


def test_hub_ids_resolve_offline_from_a_cache_laid_out_by_hand(tmp_path):
    """hf:ORG/NAME (main, a pinned commit, a tag) and gguf:ORG/NAME/FILE.gguf resolve to the cache's snapshot files
    with HF_HUB_OFFLINE=1 and describe the same models; a missing id is one line naming it and the fetch command."""
    source_dir = _tiny_hf_model(tmp_path / "source")
    source_gguf = _tiny_gguf(tmp_path / "source.gguf")
    hub_cache = tmp_path / "hf_home" / "hub"
    model_files = {p.name: p for p in source_dir.iterdir()}
    llama = lay_out_cache(hub_cache, "org/tiny-llama", {COMMIT_MAIN: model_files, COMMIT_V1: model_files},
                          {"main": COMMIT_MAIN, "v1": COMMIT_V1})
    gguf_repo = lay_out_cache(hub_cache, "org/tiny-gguf", {COMMIT_MAIN: {"m.gguf": source_gguf}},
                              {"main": COMMIT_MAIN})
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_"))}
    env.update(HF_HOME=str(tmp_path / "hf_home"), HF_HUB_OFFLINE="1", JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    argv = [sys.executable, "-c", OFFLINE_SCRIPT, str(source_dir), str(source_gguf), COMMIT_MAIN, KD_TINY]
    proc = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])

    assert out["hf"] == str(llama / "snapshots" / COMMIT_MAIN) == out["pinned"]
    assert out["tag"] == str(llama / "snapshots" / COMMIT_V1)
    assert out["hf_name"] == "org/tiny-llama" and out["same_config"]
    assert out["gguf"] == str(gguf_repo / "snapshots" / COMMIT_MAIN / "m.gguf") and out["gguf_same_config"]
    assert out["missing"].startswith("init_from=hf:org/missing: org/missing is not in the Hugging Face cache (")
    assert "fetch it where the Hub is reachable with `hf download org/missing`" in out["missing"]
    assert out["cli_exit"] == 2
    assert out["cli_stderr"].count("\n") == 1 and "teacher=hf:org/missing: org/missing is not in the Hugging " \
        "Face cache" in out["cli_stderr"] and "HF_HUB_OFFLINE=1" in out["cli_stderr"]


@pytest.fixture
def hub_calls(monkeypatch):
    """huggingface_hub's download functions replaced by recorders: any call is a fetch."""
    calls = []

    def snapshot(repo, **kw):
        calls.append(("snapshot", repo, kw))
        directory = Path("fetched") / repo
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "config.json").write_text("{}")
        return str(directory)

    def one_file(repo, filename, **kw):
        calls.append(("file", repo, filename, kw))
        return f"fetched/{repo}/{filename}"

    monkeypatch.setattr(hub, "snapshot_download", snapshot)
    monkeypatch.setattr(hub, "hf_hub_download", one_file)
    return calls


def test_local_paths_win_and_nothing_is_fetched_unless_a_hub_id_is_named(tmp_path, monkeypatch, hub_calls):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "org" / "name").mkdir(parents=True)
    (tmp_path / "org" / "name" / "config.json").write_text("{}")
    (tmp_path / "org" / "repo").mkdir()
    (tmp_path / "org" / "repo" / "m.gguf").write_bytes(b"GGUF")

    local = model_spec.parse("hf:org/name", "init_from")   # a directory of that name: the local path wins
    assert local.path == Path("org/name") and local.hub_id is None
    assert model_spec.parse("gguf:org/repo/m.gguf", "distill.teacher").path == Path("org/repo/m.gguf")
    assert model_spec.parse("org/name", "chat model", schemes=("gguf", "hf"), bare=True).path == Path("org/name")
    assert model_spec.parse("gguf:smollm2", "distill.teacher").is_embedded
    for spec, message in [
        ("hf:/no/such/dir", "does not exist or holds no config.json"),         # a path, not an id: no fetch
        ("hf:org/name/extra", "does not exist or holds no config.json"),
        ("hf:org/other@", "does not exist or holds no config.json"),            # no revision after the @
        ("hf:./org/other", "does not exist or holds no config.json"),
        ("gguf:org/other.gguf", "GGUF file org/other.gguf does not exist"),      # ORG/NAME alone names no file
    ]:
        with pytest.raises(ConfigError, match=message):
            model_spec.parse(spec, "init_from")
    with pytest.raises(ConfigError, match="a Hugging Face Hub model takes its scheme: write hf:org/other$"):
        model_spec.parse("org/other", "chat model", schemes=("gguf", "hf"), bare=True)
    assert hub_calls == []

    assert model_spec.parse("hf:org/other@v2", "init_from").hub_id == hub.HubId("org/other", "v2", None)
    gguf = model_spec.parse("gguf:org/other/sub/m.gguf", "distill.teacher")
    assert gguf.path == Path("fetched/org/other/sub/m.gguf") and str(gguf) == "gguf:org/other/sub/m.gguf"
    assert hub_calls == [("snapshot", "org/other", {"revision": "v2", "allow_patterns": hub.MODEL_FILES}),
                         ("file", "org/other", "sub/m.gguf", {"revision": None})]


def _http_error(cls, status: int):
    import httpx2

    response = httpx2.Response(status, request=httpx2.Request("GET", "https://huggingface.co/api/models/org/x"))
    return cls("refused", response=response)


@pytest.mark.parametrize("make_error, message", [
    (lambda: _http_error(GatedRepoError, 403), "org/x is gated; accept its terms on huggingface.co/org/x and "
                                                   "log in with `hf auth login`"),
    (lambda: _http_error(RepositoryNotFoundError, 404), "no model org/x on the Hugging Face Hub"),
    (lambda: _http_error(RevisionNotFoundError, 404), "org/x has no revision 'v9'"),
    (lambda: _http_error(HfHubHTTPError, 500), r"the Hugging Face Hub refused the download \(refused"),
])
def test_what_the_hub_answers_is_one_line_naming_the_id(monkeypatch, make_error, message):
    def refuse(*args, **kwargs):
        raise make_error()

    monkeypatch.setattr(hub, "snapshot_download", refuse)
    with pytest.raises(ConfigError, match=f"^init_from=hf:org/x@v9: {message}") as info:
        model_spec.parse("hf:org/x@v9", "init_from")
    assert "\n" not in str(info.value)
