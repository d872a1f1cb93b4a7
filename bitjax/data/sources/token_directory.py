"""The many-shard token directory `bitjax tokenize` writes, and its reader: one corpus in many token shards.

A source's directory (the one place this layout is defined):
  shard-00000/       input file 0's documents in the single-shard layout (bitjax.data.sources.token_shard: tokens.npy,
                     offsets.npy, prompt_lengths.npy, meta.json)
  shard-00000.done   written after the shard: its entry below; a shard without it is redone by a rerun
  manifest.json      written once every shard is done: {"format", "tokenizer_fingerprint", "source", "inputs",
                     "documents", "tokens", "shards": [entry, ...]}, an entry being {"name", "input", "documents",
                     "tokens", "max_id", "files": {file name: {"bytes", "sha256"}}}
`tokens:DIR` reads it memory-mapped at any size: document i is found by a binary search over the shards'
document counts, and nothing reads every token at start-up (each shard's file sizes are checked against the
manifest, and its largest id against the vocabulary).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bitjax import tokenizer as tokenizer_lib
from bitjax.data.sources.token_shard import TokenShard, load_shard
from bitjax.errors import DataError

FORMAT = "bitjax-tokens-v1"
MANIFEST = "manifest.json"
SHARD_FILES = ("tokens.npy", "offsets.npy", "prompt_lengths.npy", "meta.json")


def shard_name(index: int) -> str:
    return f"shard-{index:05d}"


def done_name(index: int) -> str:
    return f"{shard_name(index)}.done"


def manifest(entries: list[dict], fingerprint: str, source: str, inputs: list[str]) -> dict:
    return {"format": FORMAT, "tokenizer_fingerprint": fingerprint, "source": source, "inputs": inputs,
            "documents": sum(e["documents"] for e in entries), "tokens": sum(e["tokens"] for e in entries),
            "shards": entries}


class ShardSet:
    """Many token shards read as one (documents lo..hi-1 of their concatenation); the TokenShard interface."""

    def __init__(self, shards: list[TokenShard], fingerprint: str, source: str, lo: int = 0, hi: int | None = None):
        self.shards, self.fingerprint, self.source = shards, fingerprint, source
        self._doc_starts = np.concatenate([[0], np.cumsum([len(s) for s in shards])]).astype(np.int64)
        self._token_starts = np.concatenate([[0], np.cumsum([s.n_tokens for s in shards])]).astype(np.int64)
        self.lo, self.hi = lo, int(self._doc_starts[-1]) if hi is None else hi

    def __len__(self) -> int:
        return self.hi - self.lo

    def _locate(self, index: int) -> tuple[int, int]:
        """(shard, document within it) of global document `index`."""
        k = int(np.searchsorted(self._doc_starts, index, side="right")) - 1
        return k, index - int(self._doc_starts[k])

    def _token_position(self, index: int) -> int:
        if index >= self._doc_starts[-1]:
            return int(self._token_starts[-1])
        k, i = self._locate(index)
        shard = self.shards[k]
        return int(self._token_starts[k] + shard.offsets[i] - shard.offsets[0])

    @property
    def n_tokens(self) -> int:
        return self._token_position(self.hi) - self._token_position(self.lo)

    @property
    def max_doc_tokens(self) -> int:
        first, last = self._locate(self.lo)[0], self._locate(max(self.lo, self.hi - 1))[0]
        return max(s.max_doc_tokens for s in self.shards[first:last + 1])

    def document(self, index: int) -> tuple[np.ndarray, int]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        k, i = self._locate(self.lo + index)
        return self.shards[k].document(i)

    def slice(self, lo: int, hi: int) -> "ShardSet":
        view = ShardSet.__new__(ShardSet)
        view.__dict__.update(self.__dict__)
        view.lo, view.hi = self.lo + lo, self.lo + hi
        return view


def read_manifest(directory: Path) -> dict:
    path = directory / MANIFEST
    try:
        data = json.loads(path.read_text())
        if data.get("format") != FORMAT or not isinstance(data.get("shards"), list):
            raise ValueError(f"format {data.get('format')!r}, expected {FORMAT}")
        return data
    except (OSError, ValueError, AttributeError) as e:
        raise DataError(f"{path}: not a bitjax token manifest ({e}); rerun `bitjax tokenize` into a new "
                        "directory") from None


def load(directory: str | Path, expected_fingerprint: str | None = None, *,
         vocab_size: int | None = None) -> ShardSet:
    """A finished many-shard directory, memory-mapped and checked without reading every token."""
    directory = Path(directory)
    data = read_manifest(directory)
    if expected_fingerprint is not None:
        tokenizer_lib.check_fingerprint(data.get("tokenizer_fingerprint"), expected_fingerprint, directory)
    fix = f"rerun `bitjax tokenize` after deleting {directory}/<shard> and its .done file"
    shards = []
    for entry in data["shards"]:
        if entry["documents"] == 0:   # an input file without documents
            continue
        shard_dir = directory / entry["name"]
        for name, expected in entry["files"].items():
            size = (shard_dir / name).stat().st_size if (shard_dir / name).is_file() else None
            if size != expected["bytes"]:
                raise DataError(f"{shard_dir / name}: {size if size is not None else 'no'} bytes, the manifest "
                                f"says {expected['bytes']} (truncated or replaced); {fix}")
        if vocab_size is not None and entry["max_id"] >= vocab_size:
            raise DataError(f"{shard_dir}: token ids up to {entry['max_id']}, outside the tokenizer's vocabulary "
                            f"of {vocab_size}; tokenize with the run's tokenizer")
        shards.append(load_shard(shard_dir, scan_tokens=False, fix=fix))
    if not shards or sum(len(s) for s in shards) == 0:
        raise DataError(f"{directory}: the token directory holds no documents")
    return ShardSet(shards, data["tokenizer_fingerprint"], data.get("source", str(directory)))


def load_tokens(directory: str | Path, expected_fingerprint: str | None = None, *,
                vocab_size: int | None = None) -> TokenShard | ShardSet:
    """A `tokens:DIR` source: one shard (meta.json) or a `bitjax tokenize` directory (manifest.json)."""
    directory = Path(directory)
    if (directory / MANIFEST).is_file():
        return load(directory, expected_fingerprint, vocab_size=vocab_size)
    if not (directory / "meta.json").is_file() and any(directory.glob("shard-*.done")):
        done = len(list(directory.glob("shard-*.done")))
        raise DataError(f"{directory}: `bitjax tokenize` has not finished ({done} shard(s) done, no {MANIFEST}); "
                        "rerun the same command to finish it")
    if not (directory / "meta.json").is_file():
        raise DataError(f"{directory}: not a token directory (no {MANIFEST} or meta.json); write one with "
                        "`bitjax tokenize RECIPE --out DIR` (or bitjax.data.sources.token_shard.save_shard)")
    return load_shard(directory, expected_fingerprint, vocab_size=vocab_size)
