"""`bitjax export RUN_DIR OUT_DIR --format web`: a static folder that runs the student in a browser.

    OUT_DIR/
      index.html            bitjax's page (web_page/index.html): loads the model, streams answers, shows tokens/s
      bitjax-web.json       what the page reads: the GGUF file(s), the run's name and step, its chat format, the
                            tokens it never samples (web_vocab.py)
      model.gguf            the student exactly as `--format gguf` writes it (same --type, --embedding-type)
        or model-00001-of-0000N.gguf ...   split files (gguf_split.py) when it exceeds --split-mb
      wllama/               the WebAssembly llama.cpp, copied from the local npm install (web_runtime.py)
      _headers              COOP/COEP for static hosts that read this file (Netlify, Cloudflare Pages)

Nothing is fetched from elsewhere when the page loads. Any static file server works (`python -m http.server`
runs it on one thread); cross-origin isolation headers let it use threads (`bitjax serve OUT_DIR` sends them).
The folder is built under a temporary name and renamed into place; --force replaces only an earlier web export.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from bitjax.errors import ExportError
from bitjax.export import architectures, checks, web_prompt, web_runtime, web_vocab
from bitjax.export.common import atomic_directory, check_output_apart
from bitjax.export.embedding_quant import EMBEDDING_TYPES, default_embedding_type
from bitjax.export.gguf_split import split_gguf
from bitjax.export.gguf_writer import QTYPES, write_gguf
from bitjax.export.model_source import TernaryModel
from bitjax.paths import is_remote, user_path
from bitjax.run import Run

PAGE = Path(__file__).with_name("web_page") / "index.html"
MANIFEST = "bitjax-web.json"
MODEL_FILE = "model.gguf"
# wllama 3.13 reads a file into one ArrayBuffer and llama.cpp's ftell is 32-bit in wasm: each file < 2 GiB.
# Its README recommends split files of at most 512 MB (parallel downloads, less memory pressure).
BROWSER_FILE_LIMIT_MB = 2047
DEFAULT_SPLIT_MB = 512
HEADERS = ("/*\n  Cross-Origin-Opener-Policy: same-origin\n  Cross-Origin-Embedder-Policy: require-corp\n"
           "  Cross-Origin-Resource-Policy: same-origin\n")


def check_web_output(out: Path, force: bool) -> None:
    """An existing OUT_DIR is replaced only with --force, and only if it is an earlier web export (or empty)."""
    if not out.exists():
        return
    if not force:
        raise ExportError(f"{out} already exists; pass --force to replace it (an earlier web export only), or "
                          "choose another output folder")
    if not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST).is_file()):
        raise ExportError(f"{out} exists and is not a bitjax web export (no {MANIFEST}); --force replaces only "
                          "those: remove it yourself or choose another output folder")


def check_web_options(gguf_type: str, embedding_type: str, split_mb: float, allow_runtime_mismatch: bool) -> None:
    if gguf_type not in QTYPES:
        raise ExportError(f"--type {gguf_type} is not supported; use one of {', '.join(QTYPES)}")
    if embedding_type not in EMBEDDING_TYPES:
        raise ExportError(f"--embedding-type {embedding_type} is not supported; use one of "
                          f"{', '.join(EMBEDDING_TYPES)}")
    if not 0 < split_mb <= BROWSER_FILE_LIMIT_MB:
        raise ExportError(f"--split-mb {split_mb}: a browser reads each file whole, so split files must hold more "
                          f"than 0 and at most {BROWSER_FILE_LIMIT_MB} MB (default {DEFAULT_SPLIT_MB})")
    if allow_runtime_mismatch:
        raise ExportError("--allow-runtime-mismatch does not apply to --format web: the page runs only what "
                          "llama.cpp is checked to compute; export --format gguf to write such a file")


def export_web(run_dir: str | Path, out: str | Path, *, gguf_type: str | None = None,
               embedding_type: str | None = None, force: bool = False, split_mb: float = DEFAULT_SPLIT_MB,
               allow_runtime_mismatch: bool = False, progress: bool = False) -> dict:
    """Export a run's latest checkpoint as a web folder; every input is checked before the checkpoint is read."""
    out, run_dir = user_path(out, "OUT_DIR"), user_path(run_dir, "RUN_DIR")
    check_output_apart(out, run_dir)   # first: replacing an overlapping output would delete the run
    if is_remote(out):
        raise ExportError(f"OUT_DIR {out}: --format web writes a local folder; export it here, then copy the folder "
                          "to the bucket or static host")
    gguf_type = gguf_type or "tq2_0"
    embedding_type = embedding_type or default_embedding_type(gguf_type)
    check_web_options(gguf_type, embedding_type, split_mb, allow_runtime_mismatch)
    check_web_output(Path(out), force)
    run = Run(run_dir)   # refuses a run without a checkpoint or without its tokenizer.json
    if unfinished := checks.unfinished_quantization(run):   # a page offers no way around it
        raise ExportError(unfinished.split("; train to")[0] + f"; train to step {run.config.quant_warmup_steps + 1} "
                          "or later (or export --format gguf --allow-unfinished-quantization to look at it)")
    if checks.gguf_activation_problems(run.config.model):
        raise ExportError(
            f"model.ffn_activation={run.config.model.ffn_activation!r}: the page runs llama.cpp's bitnet graph, "
            "which bitjax checks only with the SiLU-gated FFN (released llama.cpp computes a relu2 student wrongly); "
            f"train the SiLU variant ({checks.SILU_RECIPES}, or --set model.ffn_activation=silu)")
    package = web_runtime.find_runtime()
    chat, note = web_prompt.chat_format(run.config)
    if note:
        print(f"bitjax: note: the page offers plain prompts only ({note})", file=sys.stderr)
    model = TernaryModel.from_run(run)
    return write_web_folder(model, Path(out), package, gguf_type=gguf_type, embedding_type=embedding_type,
                            force=force, split_mb=split_mb, chat=chat, progress=progress)


def write_web_folder(model: TernaryModel, out: Path, package: Path, *, gguf_type: str, embedding_type: str,
                     force: bool = False, split_mb: float = DEFAULT_SPLIT_MB,
                     chat: web_prompt.ChatFormat | None = None, progress: bool = False) -> dict:
    """Write the folder for an in-memory model (the benchmarks' random students use this directly)."""
    with atomic_directory(out, force) as tmp:
        tmp = Path(tmp)
        single = write_gguf(model, tmp / MODEL_FILE, gguf_type, embedding_type=embedding_type, force=True,
                            progress=progress)
        files = split_gguf(Path(single), int(split_mb * 1_000_000))
        if files != [Path(single)]:
            Path(single).unlink()
        runtime_files = web_runtime.copy_runtime(package, tmp)
        shutil.copyfile(PAGE, tmp / "index.html")
        (tmp / "_headers").write_text(HEADERS, encoding="utf-8")
        chat_entry = None if chat is None else {   # the trace file's name only: no local paths in a published folder
            "prefix": chat.prefix, "suffix": chat.suffix, "source": Path(chat.source).name}
        manifest = {
            "format": "bitjax-web", "version": 1, "name": model.name, "step": model.step,
            "type": gguf_type, "embedding_type": embedding_type,
            "files": [f.name for f in files], "bytes": sum(f.stat().st_size for f in files),
            "context_length": model.config.max_seq_len, "chat": chat_entry,
            "banned_tokens": web_vocab.partial_text_tokens(files[0]),   # not UTF-8 on their own: see web_vocab
            "runtime": {"package": web_runtime.PACKAGE, "version": web_runtime.VERSION, "files": runtime_files},
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return {"path": str(out), "format": "web", "type": gguf_type, "embedding_type": embedding_type, "bytes": size,
            "step": model.step, "files": manifest["files"], "chat": chat is not None,
            "architecture": architectures.architecture(model.config).name}
