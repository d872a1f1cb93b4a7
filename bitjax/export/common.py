"""Atomic output paths shared by the exporters (and ExportError, re-exported for them).

An output on a bucket (gs://) is built and verified in a local temporary directory (the writers and the
llama.cpp check need local files), then uploaded: a file is one object, complete or absent; a packed
directory is several objects, uploaded one by one after any old one is deleted (a bucket has no atomic
directory rename), so an interrupted upload leaves a partial directory to export again.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from etils import epath

from bitjax.errors import ExportError
from bitjax.paths import is_remote, user_path


def check_output_free(out: epath.Path, force: bool, kind: str) -> None:
    """Refuse to overwrite an existing output unless `force`, and never one of the other kind: `--force` replaces
    an earlier export, not a directory where a file goes (or a file where a directory goes)."""
    if kind == "file" and out.is_dir():
        raise ExportError(f"{out} is a directory; --format gguf writes one file: pass a file path such as "
                          f"{out / 'model.gguf'}")
    if kind == "directory" and out.exists() and not out.is_dir():
        raise ExportError(f"{out} is a file; --format packed writes a directory, choose another path")
    if out.exists() and not force:
        raise ExportError(f"{out} already exists; pass --force to replace it, or choose another output path")


# What `bitjax train` and `bitjax eval` write into a run directory (bitjax.run, bitjax.training.outputs).
RUN_ENTRIES = frozenset({"config.json", "tokenizer.json", "checkpoints", "damaged_checkpoints", "train.lock",
                         "metrics.jsonl", "tb", "summary.json", "loss_curve.png", "answers.jsonl", "process_logs"})


def check_output_apart(out: epath.Path, run_dir: epath.Path) -> None:
    """Refuse an output that is the run directory, contains it, or is (or lies inside) one of the run's own files.

    Replacing such an output (--force) would move the run aside and delete it, checkpoints and all. A new file
    or directory of its own inside the run (`RUN/student.gguf`) is fine. Checked before anything is read.
    """
    out, run = user_path(out, "output"), user_path(run_dir, "run directory")
    if is_remote(out) != is_remote(run):   # a bucket and a local disk cannot overlap
        return
    # local paths resolve symlinks too (pathlib), so a link to the run is caught
    out, run = (out, run) if is_remote(out) else (Path(out).resolve(), Path(run).resolve())
    inside_own = out.is_relative_to(run) and out != run and out.relative_to(run).parts[0] in RUN_ENTRIES
    if out == run or run.is_relative_to(out) or inside_own:
        raise ExportError(f"output {out} overlaps the run directory {run} or one of its own files; export to a "
                          "new path (next to the run, or a new name inside it)")


def _temp_sibling(out: Path) -> Path:
    return out.with_name(f".{out.name}.tmp{os.getpid()}")


@contextlib.contextmanager
def _uploaded(out: epath.Path, force: bool, kind: str, upload):
    """Yield a local temporary path for a remote `out`; `upload(local)` copies it there on success."""
    check_output_free(out, force, kind)
    with tempfile.TemporaryDirectory(prefix="bitjax-export-") as directory:
        tmp = Path(directory) / out.name
        yield tmp
        upload(tmp)


def _upload_file(local: Path, out: epath.Path) -> None:
    out.write_bytes(local.read_bytes())   # one object: readers see the old one or the new one


def _upload_directory(local: Path, out: epath.Path) -> None:
    if out.exists():
        out.rmtree()
    out.mkdir(parents=True, exist_ok=True)
    for file in sorted(local.iterdir()):
        (out / file.name).write_bytes(file.read_bytes())


@contextlib.contextmanager
def atomic_file(out: epath.Path | str, force: bool):
    """Yield a temporary path next to `out`; on success it replaces `out`, on failure it is deleted."""
    out = user_path(out, "output")
    if is_remote(out):
        with _uploaded(out, force, "file", lambda tmp: _upload_file(tmp, out)) as tmp:
            yield tmp
        return
    out = Path(out)
    check_output_free(out, force, "file")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_sibling(out)
    try:
        yield tmp
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_directory(out: epath.Path | str, force: bool):
    """Like `atomic_file` for a directory: built under a temporary name, then renamed into place.

    An existing `out` (with `force`) is moved aside first and deleted only once the new one is in place.
    """
    out = user_path(out, "output")
    if is_remote(out):
        with _uploaded(out, force, "directory", lambda tmp: _upload_directory(tmp, out)) as tmp:
            tmp.mkdir()
            yield tmp
        return
    out = Path(out)
    check_output_free(out, force, "directory")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_sibling(out)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
        old = out.with_name(f".{out.name}.old{os.getpid()}")
        if out.exists():
            os.replace(out, old)
        os.replace(tmp, out)
        if old.exists():
            shutil.rmtree(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
