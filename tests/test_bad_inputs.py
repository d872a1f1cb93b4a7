"""A table of bad inputs, each run through the real command line as a subprocess.

Every row must end with exit status 2, exactly one line on stderr that names the input at fault, and every
file the row guards byte-for-byte unchanged. The whole stderr is compared: a warning printed by a library
counts as a second line, so bitjax must keep its libraries quiet on the error path.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.support import ROOT

TINY = str(ROOT / "recipes" / "tiny.py")
SMALL = ["--set", "model.n_layers=1", "--set", "data.seq_len=32", "--set", "data.batch_size=4",
         "--set", "eval_batches=1", "--no-progress"]
# A recipe built on tiny.py whose only source is URI (and, with KD, a teacher cache at CACHE).
SOURCE_RECIPE = """
import dataclasses, importlib.util
spec = importlib.util.spec_from_file_location("tiny", {tiny!r})
tiny = importlib.util.module_from_spec(spec); spec.loader.exec_module(tiny)
from bitjax.config import SourceConfig
def get_config():
    cfg = tiny.get_config()
    src = SourceConfig("src", {uri!r}, objective={objective!r}, **{source!r})
    data = dataclasses.replace(cfg.data, sources=(src,), **{data!r})
    return dataclasses.replace(cfg, data=data, distill=dataclasses.replace(cfg.distill, cache={cache!r}))
"""


# Appended to a recipe: what gcsfs does without credentials, every request to the bucket refused (no GCS here).
NO_CREDENTIALS = """
import fsspec
from fsspec.spec import AbstractFileSystem
class NoCredentials(AbstractFileSystem):
    protocol = ("gs", "gcs")
    def refuse(self, *args, **kwargs):
        raise PermissionError("Anonymous caller does not have storage.objects.list access to the Google Cloud "
                              "Storage bucket. Permission 'storage.objects.list' denied on resource. (403)")
    info = ls = exists = glob = _open = refuse
for protocol in ("gs", "gcs"):   # epath asks for "gcs"
    fsspec.register_implementation(protocol, NoCredentials, clobber=True)
"""


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, "-m", "bitjax.cli", *args], capture_output=True, text=True, env=env,
                          cwd=cwd or ROOT, timeout=300)


def digest(path: Path) -> dict[str, str]:
    """SHA-256 of a file, or of every file under a directory (by relative path)."""
    path = Path(path)
    if path.is_file():
        return {"": hashlib.sha256(path.read_bytes()).hexdigest()}
    if not path.exists():
        return {}
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def source_recipe(tmp: Path, uri: str, *, objective: str = "", cache: str = "", source: dict | None = None,
                  **data) -> str:
    """A recipe file: tiny.py with one source at `uri` (SourceConfig fields `source`, DataConfig fields `data`)."""
    key = hashlib.sha1((uri + cache + str(source) + str(data)).encode()).hexdigest()[:8]
    path = tmp / f"recipe_{key}.py"
    path.write_text(SOURCE_RECIPE.format(tiny=TINY, uri=uri, objective=objective, cache=cache, data=data,
                                         source=source or {}))
    return str(path)


def write_tokens(directory: Path, tokens: np.ndarray, offsets: np.ndarray, tokenizer: Path) -> Path:
    """A `tokens:` shard made with `tokenizer` (so only the arrays are wrong)."""
    from bitjax import tokenizer as tokenizer_lib

    fingerprint = tokenizer_lib.fingerprint(tokenizer_lib.load(tokenizer)) if tokenizer.stat().st_size > 2 else ""
    directory.mkdir(parents=True)
    np.save(directory / "tokens.npy", tokens, allow_pickle=False)
    np.save(directory / "offsets.npy", offsets, allow_pickle=False)
    np.save(directory / "prompt_lengths.npy", np.zeros(len(offsets) - 1, np.int32), allow_pickle=False)
    (directory / "meta.json").write_text(json.dumps({"source": "test", "documents": len(offsets) - 1,
                                                        "tokenizer_fingerprint": fingerprint}))
    return directory


def llama_hf_dir(directory: Path, vocab: int = 2048, **config) -> Path:
    """A one-layer Hugging Face Llama directory (config.json + model.safetensors, zero weights) whose tensors have
    the shapes of `vocab` and the default widths; `config` overrides config.json's fields only."""
    from safetensors.numpy import save_file

    d, f = 64, 96
    shapes = {"model.embed_tokens.weight": (vocab, d), "model.norm.weight": (d,), "lm_head.weight": (vocab, d)}
    for name, shape in {"input_layernorm": (d,), "post_attention_layernorm": (d,), "self_attn.q_proj": (d, d),
                        "self_attn.k_proj": (d // 2, d), "self_attn.v_proj": (d // 2, d),
                        "self_attn.o_proj": (d, d), "mlp.gate_proj": (f, d), "mlp.up_proj": (f, d),
                        "mlp.down_proj": (d, f)}.items():
        shapes[f"model.layers.0.{name}.weight"] = shape
    directory.mkdir(parents=True)
    save_file({name: np.zeros(shape, np.float32) for name, shape in shapes.items()},
              str(directory / "model.safetensors"))
    (directory / "config.json").write_text(json.dumps({
        "model_type": "llama", "vocab_size": vocab, "hidden_size": d, "intermediate_size": f,
        "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-5,
        "tie_word_embeddings": False, **config}))
    return directory


def llama_gguf(path: Path, arch: str = "llama", weight_type=None) -> Path:
    """A one-layer GGUF of `arch` whose attn_q weight is stored as `weight_type` (raw zero bytes) when given."""
    import gguf

    d, f, vocab = 256, 512, 2048
    writer = gguf.GGUFWriter(str(path), arch)
    for key, value in {"embedding_length": d, "block_count": 1, "feed_forward_length": f,
                       "attention.head_count": 4, "attention.head_count_kv": 2, "context_length": 256}.items():
        writer.add_uint32(f"{arch}.{key}", value)
    writer.add_float32(f"{arch}.attention.layer_norm_rms_epsilon", 1e-5)
    tensors = {"token_embd.weight": (vocab, d), "output_norm.weight": (d,), "blk.0.attn_norm.weight": (d,),
               "blk.0.ffn_norm.weight": (d,), "blk.0.attn_q.weight": (d, d), "blk.0.attn_k.weight": (d // 2, d),
               "blk.0.attn_v.weight": (d // 2, d), "blk.0.attn_output.weight": (d, d),
               "blk.0.ffn_gate.weight": (f, d), "blk.0.ffn_up.weight": (f, d), "blk.0.ffn_down.weight": (d, f)}
    for name, shape in tensors.items():
        if name == "blk.0.attn_q.weight" and weight_type is not None:
            block, size = gguf.GGML_QUANT_SIZES[weight_type]
            writer.add_tensor(name, np.zeros((shape[0], shape[1] // block * size), np.uint8), raw_dtype=weight_type)
        else:
            writer.add_tensor(name, np.zeros(shape, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A run directory trained for two steps (one subprocess, the same command a user types)."""
    workdir = tmp_path_factory.mktemp("bad_inputs") / "run"
    done = cli("train", TINY, "--workdir", str(workdir), "--set", "steps=2", *SMALL)
    assert done.returncode == 0, done.stderr[-3000:]
    return workdir


@pytest.fixture(scope="module")
def kd_tokenizer(run_dir) -> Path:
    return run_dir / "tokenizer.json"


def _cases(tmp: Path, run: Path) -> list[tuple[str, list[str], str, list[Path]]]:
    """(case id, argv, text(s) the error line must contain, paths that must not change)."""
    rows = []

    def add(case, argv, needle, guarded=()):
        argv = [str(a) for a in argv]
        if "--workdir" in argv and Path(argv[argv.index("--workdir") + 1]).name.startswith("w-"):
            # rows run in parallel and `bitjax train` locks its workdir: each row gets a scratch workdir of its own
            at = argv.index("--workdir") + 1
            argv[at] = str(Path(argv[at]).parent / f"w-{len(rows)}")
        rows.append((case, argv, needle, [Path(g) for g in guarded]))

    # ----- recipes
    bad = tmp / "recipes"
    bad.mkdir()
    (bad / "syntax.py").write_text("def get_config(:\n")
    (bad / "imports.py").write_text("import no_such_module_anywhere\n")
    (bad / "raises.py").write_text("def get_config():\n    raise RuntimeError('boom')\n")
    (bad / "returns.py").write_text("def get_config():\n    return 42\n")
    (bad / "empty.py").write_text("")
    for name in ("syntax", "imports", "raises", "returns", "empty"):
        add(f"recipe-{name}", ["train", bad / f"{name}.py", "--workdir", tmp / f"w-{name}"], f"{name}.py")
    add("recipe-missing", ["train", bad / "missing.py"], "missing.py")
    add("recipe-directory", ["train", bad], str(bad))
    afile = tmp / "a_file"
    afile.write_text("keep me\n")
    add("workdir-is-a-file", ["train", TINY, "--workdir", afile, *SMALL], "a_file", [afile])
    add("workdir-under-a-file", ["train", TINY, "--workdir", afile / "run", *SMALL],
        ("--workdir", "a_file/run cannot be created", "writable"), [afile])

    # ----- overrides
    for key, value, needle in [("optim.peak_lr", "nan", "peak_lr"), ("optim.peak_lr", "inf", "peak_lr"),
                               ("optim.peak_lr", "-1e-3", "peak_lr"), ("optim.stage2_peak_lr", "nan", "stage2"),
                               ("optim.warmup_steps", "-1", "warmup_steps"), ("optim.clip_norm", "nan", "clip_norm"),
                               ("optim.weight_decay", "-0.1", "weight_decay"), ("optim.b2", "1.5", "b2"),
                               ("model.n_kv_heads", "0", "n_kv_heads"), ("model.d_model", "0", "d_model"),
                               ("model.n_heads", "3", "n_heads"), ("model.n_layers", "0", "n_layers"),
                               ("model.vocab_size", "-5", "vocab_size"), ("model.norm_eps", "nan", "norm_eps"),
                               ("steps", "0", "steps"), ("data.seq_len", "0", "seq_len"),
                               ("distill.temperature", "nan", "temperature"),
                               ("data.heldout_fraction", "nan", "heldout_fraction"),
                               ("checkpoint.every", "0", "every")]:
        add(f"set-{key}={value}", ["train", TINY, "--workdir", tmp / "w-set", "--set", f"{key}={value}", *SMALL],
            needle)

    # ----- data files
    missing_tok = tmp / "no_tokenizer.json"
    garbage_tok = tmp / "garbage_tokenizer.json"
    garbage_tok.write_bytes(b"\x00\xffnot a tokenizer")
    add("tokenizer-missing", ["train", TINY, "--workdir", tmp / "w-tok", "--set", f"data.tokenizer={missing_tok}",
                              *SMALL], missing_tok.name)
    add("tokenizer-garbage", ["train", TINY, "--workdir", tmp / "w-tok", "--set", f"data.tokenizer={garbage_tok}",
                              *SMALL], garbage_tok.name, [garbage_tok])
    add("jsonl-missing", ["train", source_recipe(tmp, f"jsonl:{tmp / 'none.jsonl'}"), "--workdir", tmp / "w-j",
                          *SMALL], "none.jsonl")
    long_line = tmp / "long_line.jsonl"
    long_line.write_text(json.dumps({"text": "x" * 5000}) + "\n")
    add("jsonl-line-too-long", ["train", source_recipe(tmp, f"jsonl:{long_line}", source={"max_line_bytes": 1024}),
                                "--workdir", tmp / "w-j", *SMALL], "long_line.jsonl", [long_line])
    not_json = tmp / "not_json.jsonl"
    not_json.write_text('{"text": "fine"}\n{"text": oops\n')
    add("jsonl-not-json", ["train", source_recipe(tmp, f"jsonl:{not_json}"), "--workdir", tmp / "w-j", *SMALL],
        "not_json.jsonl:2", [not_json])
    for name, line in [("nested-too-deep", "[" * 100_000 + "]" * 100_000),
                       ("enormous-number", '{"text": "x", "n": ' + "9" * 100_000 + "}")]:
        path = tmp / f"{name}.jsonl"
        path.write_text(json.dumps({"text": "a fine document"}) + "\n" + line + "\n")
        add(f"jsonl-{name}", ["train", source_recipe(tmp, f"jsonl:{path}"), "--workdir", tmp / "w-j", *SMALL],
            f"{path.name}:2", [path])
    for name, content in [("empty", b""), ("garbage", b"\x00garbage" * 50), ("truncated", None)]:
        path = tmp / f"{name}.arrayrecord"
        if content is None:
            from bitjax.data.sources.records import write_arrayrecord
            write_arrayrecord(path, [{"text": "a document " * 20}] * 50)
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        else:
            path.write_bytes(content)
        add(f"arrayrecord-{name}", ["train", source_recipe(tmp, f"arrayrecord:{path}"), "--workdir", tmp / "w-a",
                                    *SMALL], path.name, [path])
    tok = str(run / "tokenizer.json")
    for name, tokens, offsets, needle in [
            ("past-end", np.arange(100, dtype=np.int32), np.array([0, 50, 200], np.int64), "offsets"),
            ("float-ids", np.arange(100, dtype=np.float32), np.array([0, 50, 100], np.int64), "float"),
            ("out-of-vocab", np.full(100, 10**6, np.int32), np.array([0, 50, 100], np.int64), "vocab"),
            ("descending", np.arange(100, dtype=np.int32), np.array([0, 60, 40, 100], np.int64), "offsets")]:
        shard = write_tokens(tmp / f"tokens-{name}", tokens, offsets, Path(tok))
        add(f"tokens-{name}", ["train", source_recipe(tmp, f"tokens:{shard}", tokenizer=tok), "--workdir",
                               tmp / "w-t", *SMALL], (shard.name, needle), [shard])
    unreadable = write_tokens(tmp / "tokens-unreadable", np.arange(100, dtype=np.int32), np.array([0, 100]),
                              Path(tok))
    (unreadable / "offsets.npy").write_bytes(b"not numpy")
    add("tokens-unreadable", ["train", source_recipe(tmp, f"tokens:{unreadable}", tokenizer=tok), "--workdir",
                              tmp / "w-t", *SMALL], unreadable.name, [unreadable])

    # ----- streamed and globbed text sources, buckets, pre-tokenized directories
    import pyarrow as pa
    import pyarrow.parquet as pq

    from benchmarks.pipeline import write_parquet_corpus

    parquet = tmp / "parquet"
    parquet.mkdir()
    pq.write_table(pa.table({"body": ["a document without a text column"] * 20}), parquet / "no_text.parquet")
    (parquet / "corrupt.parquet").write_bytes(b"PAR1" + b"\x00 not parquet" * 100 + b"PAR1")
    three = write_parquet_corpus(tmp / "three_files", 300, n_files=3, rows_per_group=50)
    for case, uri, needle, guarded in [
            ("glob-matches-nothing", f"parquet:{tmp / 'nowhere'}/*.parquet", ("nowhere/*.parquet", "matches no file"),
             []),
            ("parquet-without-text-column", f"parquet:{parquet / 'no_text.parquet'}",
             ("no_text.parquet", "no column 'text'", "text_field"), [parquet]),
            ("parquet-corrupt", f"parquet:{parquet}/corrupt.parquet", ("corrupt.parquet", "not a readable Parquet"),
             [parquet]),
            ("unknown-scheme", "parquet:foo://bucket/fineweb/*.parquet", ("foo://bucket", "cannot open foo://"), [])]:
        add(case, ["train", source_recipe(tmp, uri), "--workdir", tmp / "w-p", *SMALL], needle, guarded)
    add("fewer-files-than-shards", ["train", source_recipe(tmp, f"parquet:{three}/*.parquet"), "--workdir",
                                    tmp / "w-p", "--set", "data.num_shards=4", *SMALL],
        ("has 3 file(s), fewer than the 4 data shards", "data.num_shards"), [three])
    denied = Path(source_recipe(tmp, "parquet:gs://bucket/fineweb/*.parquet"))
    denied.write_text(denied.read_text() + NO_CREDENTIALS)
    add("bucket-without-credentials", ["train", denied, "--workdir", tmp / "w-p", *SMALL],
        ("gs://bucket/fineweb/*.parquet", "storage.objects.list", "log in"))
    add("tokenize-bucket-without-credentials", ["tokenize", denied, "--out", tmp / "tok-out", "--process-index",
                                                "0", "--process-count", "1"], ("gs://bucket/fineweb", "log in"))
    add("tokenize-process-index", ["tokenize", TINY, "--out", tmp / "tok-out", "--process-index", "2",
                                   "--process-count", "2"], "--process-index 2")
    unfinished = tmp / "tokens-unfinished"
    unfinished.mkdir()
    (unfinished / "shard-00000.done").write_text("{}")
    unfinished_recipe = source_recipe(tmp, f"tokens:{unfinished}", tokenizer=str(run / "tokenizer.json"))
    add("tokens-unfinished", ["train", unfinished_recipe, "--workdir", tmp / "w-t", *SMALL],
        (unfinished.name, "has not finished"), [unfinished])

    # ----- teacher caches
    for name, manifest in [("not-json", "{oops"), ("no-key", json.dumps({"format": "bitjax-topk-v1"}))]:
        cache = tmp / f"cache-{name}"
        (cache / "src").mkdir(parents=True)
        (cache / "src" / "manifest.json").write_text(manifest)
        recipe = source_recipe(tmp, f"jsonl:{ROOT / 'data/rephrased/shakespeare.jsonl'}", objective="kd",
                               cache=str(cache))
        add(f"cache-manifest-{name}", ["train", recipe, "--workdir", tmp / "w-c", *SMALL], "manifest.json", [cache])

    rephrased = f"jsonl:{ROOT / 'data/rephrased/shakespeare.jsonl'}"
    looping = source_recipe(tmp, rephrased, objective="kd", cache=str(tmp / "kd-cache"),
                            source={"on_cache_exhausted": "loop"})
    add("on-cache-exhausted-unknown", ["train", looping, "--workdir", tmp / "w-c", *SMALL],
        ("on_cache_exhausted='loop'", "repeat, ce"))
    for scheme in ("foo", "s3"):
        add(f"cache-scheme-{scheme}", ["train", source_recipe(tmp, rephrased, objective="kd", cache=f"{scheme}://b/c"),
                                       "--workdir", tmp / "w-c", *SMALL], f"{scheme}://b/c")

    # ----- cache-teacher arguments
    kd = source_recipe(tmp, rephrased, objective="kd", cache=str(tmp / "kd-cache"))
    other_vocab = tmp / "hf-vocab-100"   # a teacher's config.json alone: the vocabulary is checked before weights
    other_vocab.mkdir()
    (other_vocab / "config.json").write_text(json.dumps({
        "model_type": "llama", "vocab_size": 100, "hidden_size": 32, "intermediate_size": 64,
        "num_hidden_layers": 1, "num_attention_heads": 2}))
    add("cache-teacher-jax-vocabulary", ["cache-teacher", kd, "--teacher", f"hf:{other_vocab}", "--backend", "jax"],
        ("vocabulary of 100 tokens", "model.vocab_size"), [tmp / "kd-cache"])
    add("cache-teacher-out-scheme", ["cache-teacher", kd, "--teacher", f"hf:{other_vocab}", "--out", "foo://b/c"],
        "foo://b/c")
    for flag, value, needle in [("--examples", "0", "--examples"), ("--examples", "-3", "--examples"),
                                ("--shards", "0", "--shards"), ("--k", "0", "--k"),
                                ("--teacher", f"gguf:{tmp / 'nope.gguf'}", "nope.gguf"),
                                ("--teacher", "ftp:somewhere", "ftp:somewhere"),
                                ("--teacher", f"bitjax:{tmp / 'no-run'}", "no-run")]:
        add(f"cache-teacher{flag}={value.split('/')[-1]}", ["cache-teacher", kd, flag, value], needle)

    # ----- eval
    for flag, value in [("--batches", "0"), ("--batches", "-2"), ("--limit", "-1"), ("--limit", "0"),
                        ("--max-new-tokens", "100000"), ("--max-new-tokens", "0")]:
        extra = ["--prompts", ROOT / "data/traces/gsm_symbolic_heldout.jsonl"] if flag != "--batches" else []
        add(f"eval{flag}={value}", ["eval", run, flag, value, *extra], flag, [run])
    add("eval-prompts-missing", ["eval", run, "--prompts", tmp / "no_prompts.jsonl"], "no_prompts.jsonl", [run])
    add("eval-run-is-a-file", ["eval", afile], "a_file", [afile])
    add("eval-task-unknown", ["eval", run, "--task", "chain_summ"], "chain_summ", [run])
    add("eval-task-bad-setting", ["eval", run, "--task", "chain_sum:min_terms=zero"], "min_terms", [run])
    add("eval-problems-0", ["eval", run, "--task", "chain_sum", "--problems", "0"], "--problems", [run])
    add("eval-samples-0", ["eval", run, "--task", "chain_sum", "--samples", "0"], "--samples", [run])
    add("eval-gguf-no-task", ["eval", tmp / "student.gguf"], "--task")
    add("eval-gguf-missing", ["eval", tmp / "student.gguf", "--task", "chain_sum"], "student.gguf")

    # ----- export
    outside = tmp / "exported"
    add("export-onto-run", ["export", run, run, "--format", "packed", "--force"], str(run), [run])
    add("export-onto-parent", ["export", run, run.parent, "--format", "packed", "--force"], str(run), [run])
    add("export-into-run", ["export", run, run / "checkpoints", "--format", "packed", "--force"], str(run), [run])
    add("export-gguf-onto-config", ["export", run, run / "config.json", "--format", "gguf", "--force"], str(run),
        [run])
    add("export-existing-no-force", ["export", run, afile, "--format", "gguf"], "a_file", [afile, run])
    a_dir = tmp / "a_dir"
    a_dir.mkdir()
    (a_dir / "notes.txt").write_text("keep me\n")
    add("export-gguf-onto-directory", ["export", run, a_dir, "--format", "gguf", "--force"],
        ("a_dir is a directory", "a_dir/model.gguf"), [a_dir, run])
    for name, text in [("garbage", "{not json"), ("list", '{"config": []}'), ("wrong-type", '{"config": 3}')]:
        broken = tmp / f"run-config-{name}"
        broken.mkdir()
        (broken / "config.json").write_text(text)
        for link in ("checkpoints", "tokenizer.json"):   # the rest of a real run, shared read-only
            (broken / link).symlink_to(run / link)
        add(f"eval-config-{name}", ["eval", broken], "config.json", [broken / "config.json", run])
        add(f"export-config-{name}", ["export", broken, tmp / f"out-{name}.gguf", "--format", "gguf"],
            "config.json", [broken / "config.json", run])
    add("export-of-missing-run", ["export", tmp / "no-run", outside, "--format", "gguf"], "no-run")

    # ----- pretrained models: init_from (the student's first parameters) and the online teacher
    import gguf

    pre = tmp / "pretrained"
    gpt2 = llama_hf_dir(pre / "hf-gpt2", model_type="gpt2")
    shapes = llama_hf_dir(pre / "hf-shapes", intermediate_size=80)
    vocab = llama_hf_dir(pre / "hf-vocab-128", vocab=128)
    q8_k = llama_gguf(pre / "q8_k.gguf", weight_type=gguf.GGMLQuantizationType.Q8_K)   # llama.cpp's activation type
    for case, spec, needle, guarded in [
            ("init-from-hf-architecture", f"hf:{gpt2}", ("config.json", "model_type 'gpt2' is not supported"), gpt2),
            ("init-from-hf-shapes", f"hf:{shapes}", ("hf-shapes", "down_proj.weight has shape (64, 96), config.json "
                                                    "implies (64, 80)"), shapes),
            ("init-from-hf-vocabulary", f"hf:{vocab}", ("vocabulary of 128 tokens, the student 2048",), vocab),
            ("init-from-gguf-architecture", f"gguf:{llama_gguf(pre / 'gpt2.gguf', arch='gpt2')}",
             ("gpt2.gguf", "architecture 'gpt2' is not supported"), pre / "gpt2.gguf"),
            ("init-from-gguf-tensor-type", f"gguf:{q8_k}", ("q8_k.gguf", "blk.0.attn_q.weight has type Q8_K"), q8_k)]:
        add(case, ["train", TINY, "--workdir", tmp / "w-init", "--set", f"init_from={spec}", *SMALL], needle,
            [guarded])
    add("online-teacher-vocabulary", ["train", TINY, "--workdir", tmp / "w-teacher", "--set",
                                      f"distill.teacher=hf:{vocab}", "--set", "distill.online=true", *SMALL],
        ("teacher has a vocabulary of 128 tokens, the student 2048",), [vocab])

    # ----- traces and rephrase outputs that are someone else's file
    foreign = tmp / "notes.txt"
    foreign.write_bytes(b"my notes\nlast line without a newline")
    add("traces-out-foreign", ["traces", "--out", foreign, "--teacher", tmp / "no.gguf", "--prompts", "1"],
        "notes.txt", [foreign])
    add("rephrase-out-foreign", ["rephrase", "--out", foreign, "--source", f"jsonl:{long_line}",
                                 "--generator", tmp / "no.gguf"], "notes.txt", [foreign])
    add("traces-prompts-0", ["traces", "--out", tmp / "t.jsonl", "--prompts", "0"], "--prompts")
    add("traces-samples-0", ["traces", "--out", tmp / "t.jsonl", "--samples", "0"], "--samples")
    add("traces-batch-0", ["traces", "--out", tmp / "t.jsonl", "--batch", "0"], "--batch")
    add("traces-task-unknown", ["traces", "--out", tmp / "t.jsonl", "--task", "chain_summ"], "chain_summ")
    add("traces-task-bad-keyword", ["traces", "--out", tmp / "t.jsonl", "--task", "chain_sum:terms=4"], "terms")
    add("traces-task-file-missing", ["traces", "--out", tmp / "t.jsonl", "--task", f"jsonl:{tmp / 'no.jsonl'}"],
        "no.jsonl")
    add("traces-teacher-no-run", ["traces", "--out", tmp / "t.jsonl", "--teacher", f"bitjax:{tmp / 'no-run'}"],
        "no-run")
    add("rephrase-limit-0", ["rephrase", "--out", tmp / "r.jsonl", "--limit", "0"], "--limit")
    add("generate-missing-model", ["generate", tmp / "no.gguf", "--prompt", "hi"], "no.gguf")
    return rows


@pytest.fixture(scope="module")
def results(run_dir, tmp_path_factory):
    """Every row run once, several at a time (each is mostly start-up: importing JAX), with the guarded
    files hashed before and after: {case: (argv, needle, stderr, exit code, changed guarded paths)}."""
    from concurrent.futures import ThreadPoolExecutor

    rows = _cases(tmp_path_factory.mktemp("inputs"), run_dir)

    def one(row):
        case, argv, needle, guarded = row
        before = {str(p): digest(p) for p in guarded}
        done = cli(*argv)
        changed = [p for p in before if digest(Path(p)) != before[p]]
        return case, (argv, needle, done.stderr, done.returncode, changed)

    with ThreadPoolExecutor(max_workers=max(2, (os.cpu_count() or 2) * 2)) as pool:
        return dict(pool.map(one, rows))


def _case_ids() -> list[str]:
    """The row ids, computed on throwaway paths so pytest can name each row before the fixtures run."""
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        run = Path(d) / "run"
        (run / "checkpoints").mkdir(parents=True)
        (run / "tokenizer.json").write_text("{}")
        return [row[0] for row in _cases(Path(d), run)]


@pytest.mark.parametrize("case", _case_ids())
def test_bad_input_is_one_line_exit_2_and_changes_nothing(results, case):
    argv, needle, stderr, code, changed = results[case]
    lines = stderr.splitlines()
    assert code == 2 and len(lines) == 1, f"{argv}: exit {code}, stderr:\n{stderr[-3000:]}"
    needles = (needle,) if isinstance(needle, str) else needle   # the input, and for some rows the reason
    assert lines[0].startswith("bitjax: error: ") and all(n in lines[0] for n in needles), lines[0]
    assert not changed, f"{argv} changed {changed}"
