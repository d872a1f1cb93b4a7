"""Teacher top-k caches: ArrayRecord shards of per-position top-k log-probabilities, plus a manifest.

Layout of a cache directory (local, or gs://: every file goes through etils.epath, shards are read by
ArrayRecord, which opens gs:// objects itself):
  spec.json                          the CacheSpec every writing process agrees on (written first)
  manifest.json                      what the cache holds and how to check it (written last)
  shard-00000-of-00004.arrayrecord   records, each one token sequence (group_size 1: random access)
  shard-00000-of-00004.done.json     a finished shard's record count, size and SHA-256 (its commit marker)

A record is a safetensors blob (no pickle, self-describing) of one training example of L positions:
  inputs, targets, segment_ids, positions, loss_mask   (L,) int32   the example exactly as the student sees it
  ids           (L, E)  uint16 or int32 (vocabularies over 65535)   teacher top-k token ids, best first
  logprobs      (L, E)  float16 or float32                          their log-probabilities (temperature 1)
  tail_logprob  (L,)    float32  log of the mass outside the top k (exact, from the full distribution)
The teacher reads each packed document (segment) on its own, so it never conditions across documents.

Of n cached examples (the first n sequences a source streams), shard s of S holds examples
`shard_range(s, n, S)`, a contiguous run, so a writer streams its shards one after another (version 2;
version 1 caches dealt example e to shard e % S, and are still read). Writing
(bitjax.data.teacher_files.topk_cache_writer) is resumable: the `.done.json` marker is a shard's commit point.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Iterator

import numpy as np
from array_record.python.array_record_module import ArrayRecordReader
from etils import epath
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from bitjax.data import schema
from bitjax.data.schema import SEQUENCE_FIELDS
from bitjax.errors import CacheError
from bitjax.paths import cache_location, is_remote

FORMAT = "bitjax-topk-cache"
VERSION = 2          # 2: contiguous shards (shard_range); 1: example e in shard e % S
MANIFEST = "manifest.json"
SPEC_FILE = "spec.json"


@dataclasses.dataclass(frozen=True)
class CacheSpec:
    """What every record of a cache agrees on; recorded in the manifest and checked on read."""

    teacher: str                 # e.g. "gguf:SmolLM2-135M-Instruct.Q4_1.gguf"
    tokenizer_fingerprint: str
    vocab_size: int
    k: int
    seq_len: int
    temperature: float = 1.0
    logprob_dtype: str = "float16"

    @property
    def id_dtype(self):
        return schema.teacher_id_dtype(self.vocab_size)

    def bytes_per_token(self) -> int:
        """Teacher bytes per position (top-k ids and log-probs, tail); the example fields are extra."""
        return self.k * (np.dtype(self.id_dtype).itemsize + np.dtype(self.logprob_dtype).itemsize) + 4


def shard_name(index: int, count: int) -> str:
    return f"shard-{index:05d}-of-{count:05d}.arrayrecord"


def marker_path(shard: epath.Path) -> epath.Path:
    """A shard's commit marker, beside it: `shard-00000-of-00004.done.json`."""
    return shard.with_suffix(".done.json")


def shard_range(index: int, n_examples: int, count: int) -> range:
    """The examples shard `index` of `count` holds (version 2): a contiguous run, the sizes differing by one."""
    return range(index * n_examples // count, (index + 1) * n_examples // count)


def encode_record(spec: CacheSpec, example: dict, ids_LE, logprobs_LE, tail_L) -> bytes:
    return st_save({
        **{name: np.asarray(example[name], np.int32) for name in SEQUENCE_FIELDS},
        "ids": np.asarray(ids_LE).astype(spec.id_dtype),
        "logprobs": np.asarray(logprobs_LE).astype(spec.logprob_dtype),
        "tail_logprob": np.asarray(tail_L, np.float32),
    })


def decode_record(blob: bytes) -> dict[str, np.ndarray]:
    return st_load(blob)


def sha256(path) -> str:
    """The SHA-256 of a file (local or through epath), read in 1 MiB pieces."""
    h = hashlib.sha256()
    with epath.Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def open_shard(path: epath.Path) -> ArrayRecordReader:
    """An ArrayRecord reader of a shard: a local file, or a gs:// object read by ArrayRecord's own GCS reader."""
    return ArrayRecordReader(os.fspath(path))


# --------------------------------------------------------------------------- reading

class TopKCache:
    """Random access to a finished cache, checked against the student it will train."""

    def __init__(self, directory: str | os.PathLike, *, verify_checksums: bool | None = None):
        """`verify_checksums`: hash every shard against its SHA-256 (default: for local caches; a bucket's
        shards are checked by size here, and by ArrayRecord's own chunk hashes as records are read)."""
        self.directory = cache_location(directory, "teacher cache")
        manifest_path = self.directory / MANIFEST
        if not self.directory.is_dir():
            raise CacheError(f"{self.directory} does not exist: write the teacher cache first with "
                             "`bitjax cache-teacher RECIPE` (it writes one sub-cache per distilled source)")
        if not manifest_path.exists():
            raise CacheError(f"{manifest_path} does not exist: the cache is unfinished; rerun "
                             "`bitjax cache-teacher` with the same arguments to complete it")
        rerun = "rerun `bitjax cache-teacher` with the same arguments to rewrite it"
        try:
            self.manifest = json.loads(manifest_path.read_text())
        except (ValueError, UnicodeDecodeError) as e:
            raise CacheError(f"{manifest_path} is not JSON ({e}); {rerun}") from None
        if not isinstance(self.manifest, dict) or self.manifest.get("format") != FORMAT:
            raise CacheError(f"{manifest_path} is not a bitjax top-k cache manifest; {rerun}")
        needed = [f.name for f in dataclasses.fields(CacheSpec)] + ["shards"]
        missing = [name for name in needed if name not in self.manifest]
        bad_shards = not isinstance(self.manifest.get("shards"), list) or not all(
            isinstance(m, dict) and {"file", "records", "sha256"} <= m.keys() for m in self.manifest["shards"])
        if missing or bad_shards:
            raise CacheError(f"{manifest_path} lacks {', '.join(missing) or 'well-formed shard entries'}; {rerun}")
        if self.manifest.get("version", 1) not in (1, VERSION):
            raise CacheError(f"{manifest_path} is version {self.manifest.get('version')} of the cache format; "
                             f"this bitjax reads versions 1 and {VERSION}: {rerun} into a new directory")
        try:
            self.spec = CacheSpec(**{name: self.manifest[name] for name in needed[:-1]})
        except (TypeError, ValueError) as e:
            raise CacheError(f"{manifest_path} holds an unusable cache description ({e}); {rerun}") from None
        verify = not is_remote(self.directory) if verify_checksums is None else verify_checksums
        self._readers, self._offsets = [], [0]
        for shard in self.manifest["shards"]:
            path = self.directory / shard["file"]
            _check_shard_file(path, shard, verify)
            try:
                reader = open_shard(path)
                n = reader.num_records()
            except Exception as e:  # array_record raises plain RuntimeErrors on damaged files
                raise CacheError(f"{path} cannot be read ({e}); rerun `bitjax cache-teacher` with the same "
                                 "arguments: it rewrites such shards") from None
            if n != shard["records"]:
                raise CacheError(f"{path} holds {n} records, its marker says {shard['records']}; rewrite it")
            self._readers.append((path, reader))
            self._offsets.append(self._offsets[-1] + n)

    def check_compatible(self, tokenizer_fingerprint: str, vocab_size: int, seq_len: int) -> None:
        where = self.directory / MANIFEST
        if self.spec.tokenizer_fingerprint != tokenizer_fingerprint:
            raise CacheError(
                f"{where}: cache tokenizer {self.spec.tokenizer_fingerprint} differs from the student's "
                f"{tokenizer_fingerprint}; rebuild the cache with the student's tokenizer")
        if self.spec.vocab_size != vocab_size:
            raise CacheError(f"{where}: cache vocabulary {self.spec.vocab_size} != student vocabulary "
                             f"{vocab_size}; rebuild the cache or set model.vocab_size={self.spec.vocab_size}")
        if self.spec.seq_len != seq_len:
            raise CacheError(f"{where}: cache sequences have length {self.spec.seq_len}, training uses "
                             f"{seq_len}; set data.seq_len={self.spec.seq_len} or rebuild the cache")

    def __len__(self) -> int:
        return self._offsets[-1]

    def _locate(self, index: int) -> tuple[epath.Path, object, int]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        shard = int(np.searchsorted(self._offsets, index, side="right")) - 1
        path, reader = self._readers[shard]
        return path, reader, index - self._offsets[shard]

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        path, reader, local = self._locate(int(index))
        try:
            record = decode_record(reader.read([local])[0])
        except Exception as e:
            raise CacheError(f"{path}: record {local} is damaged ({e}); rewrite the shard") from None
        self._check_record(record, path, local)
        return {
            **{name: record[name] for name in SEQUENCE_FIELDS},
            # kept as narrow as stored (bitjax.data.schema); the loss widens them on the device
            "teacher_ids": record["ids"],
            "teacher_logprobs": record["logprobs"],
            "teacher_tail": np.asarray(record["tail_logprob"], np.float32),
        }

    def _check_record(self, record: dict, path: epath.Path, local: int) -> None:
        """Every field the shape the manifest promises, ids inside the vocabulary, finite log-probabilities."""
        L, E = self.spec.seq_len, self.spec.k
        want = {**{name: (L,) for name in SEQUENCE_FIELDS}, "ids": (L, E), "logprobs": (L, E), "tail_logprob": (L,)}
        for name, shape in want.items():
            if name not in record or record[name].shape != shape:
                got = record[name].shape if name in record else "missing"
                raise CacheError(f"{path}: record {local} field {name!r} has shape {got}, the manifest says "
                                 f"{shape}: teacher positions are misaligned with the tokens; rewrite the shard")
        if int(record["ids"].max(initial=0)) >= self.spec.vocab_size or int(record["ids"].min(initial=0)) < 0:
            raise CacheError(f"{path}: record {local} holds token ids >= the vocabulary size "
                             f"{self.spec.vocab_size}; rewrite the shard")
        if not np.isfinite(record["logprobs"].astype(np.float32)).all():
            raise CacheError(f"{path}: record {local} holds NaN/Inf log-probabilities; rewrite the shard")
        # the tail's log-mass may be -inf (the top-k held all of it) but never NaN or +inf
        tail = np.asarray(record["tail_logprob"], np.float32)
        if np.isnan(tail).any() or (tail > 0).any():
            raise CacheError(f"{path}: record {local} holds a NaN or positive tail log-probability (the shard was "
                             "written so, its checksum matches); write the cache again into a new directory beside "
                             "it (`bitjax cache-teacher RECIPE --out NEW_DIR`) and set --set distill.cache=NEW_DIR")

    def example(self, e: int) -> int:
        """The record index of the e-th example written: e itself (contiguous shards), or for a version-1
        cache, whose writer dealt examples to the shards in turn, record e // S of shard e % S."""
        if self.manifest.get("version", 1) >= 2:
            return e
        num_shards = len(self._readers)
        return self._offsets[e % num_shards] + e // num_shards

    def aligned_example(self, e: int, inputs_L: np.ndarray) -> dict[str, np.ndarray]:
        """The e-th cached example, checked to be about exactly these input tokens."""
        record = self[self.example(e)]
        if not np.array_equal(record["inputs"], inputs_L):
            path, _, local = self._locate(self.example(e))
            raise CacheError(f"{path}: record {local} was computed for other tokens than the sequence it is "
                             "paired with (the data, its order or the tokenizer changed since the cache was "
                             "written); rebuild the cache with `bitjax cache-teacher` from this data")
        return record

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return (self[i] for i in range(len(self)))

    def __repr__(self) -> str:  # Grain logs sources by repr
        return f"TopKCache({str(self.directory)!r}, n={len(self)})"


def _check_shard_file(path: epath.Path, shard: dict, verify: bool) -> None:
    """A shard the manifest lists: present, and matching its SHA-256 (`verify`) or at least its size."""
    rerun = "rerun `bitjax cache-teacher` with the same arguments: it rewrites such shards"
    if not path.exists():
        raise CacheError(f"{path} is missing; rerun `bitjax cache-teacher` to rewrite it")
    if verify and sha256(path) != shard["sha256"]:
        raise CacheError(f"{path} does not match its checksum (truncated or changed); {rerun}")
    if not verify and "bytes" in shard and path.stat().length != shard["bytes"]:
        raise CacheError(f"{path} has {path.stat().length} bytes, its marker says {shard['bytes']} (truncated or "
                         f"changed); {rerun}")
