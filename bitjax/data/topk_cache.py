"""Teacher top-k caches: ArrayRecord shards of per-position top-k log-probabilities, plus a manifest.

Layout of a cache directory:
  manifest.json                      what the cache holds and how to check it (written last)
  shard-00000-of-00004.arrayrecord   records, each one token sequence (group_size 1: random access)
  shard-00000-of-00004.done.json     a finished shard's record count and SHA-256 (its commit marker)

A record is a safetensors blob (no pickle, self-describing) of one training example of L positions:
  inputs, targets, segment_ids, positions, loss_mask   (L,) int32   the example exactly as the student sees it
  ids           (L, K)  uint16 or int32 (vocabularies over 65535)   teacher top-k token ids, best first
  logprobs      (L, K)  float16 or float32                          their log-probabilities (temperature 1)
  tail_logprob  (L,)    float32  log of the mass outside the top k (exact, from the full distribution)
The teacher reads each packed document (segment) on its own, so it never conditions across documents.

Writing is resumable: a shard is first written under a temporary name, renamed, then its `.done.json`
marker is written; a shard without a marker (a killed run) is rewritten, a marked one is skipped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from array_record.python.array_record_module import ArrayRecordReader, ArrayRecordWriter
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from bitjax.data import schema
from bitjax.data.schema import SEQUENCE_FIELDS
from bitjax.errors import CacheError

FORMAT = "bitjax-topk-cache"
VERSION = 1


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




def encode_record(spec: CacheSpec, example: dict, ids_LK, logprobs_LK, tail_L) -> bytes:
    return st_save({
        **{name: np.asarray(example[name], np.int32) for name in SEQUENCE_FIELDS},
        "ids": np.asarray(ids_LK).astype(spec.id_dtype),
        "logprobs": np.asarray(logprobs_LK).astype(spec.logprob_dtype),
        "tail_logprob": np.asarray(tail_L, np.float32),
    })


def decode_record(blob: bytes) -> dict[str, np.ndarray]:
    return st_load(blob)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------- writing

TopKFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]
"""tokens (1, n) -> (ids (1, n, K), logprobs (1, n, K), tail_logprob (1, n)), e.g. `lambda t: teacher.topk(t, k)`"""


def example_topk(topk_fn: TopKFn, example: dict, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Teacher top-k for every position of a packed example, one document (segment) at a time.

    Padding (segment 0) gets id 0, log-prob 0 and tail -inf; it carries no loss.
    """
    inputs_L, segments_L = np.asarray(example["inputs"]), np.asarray(example["segment_ids"])
    length = len(inputs_L)
    ids_LK = np.zeros((length, k), np.int32)
    logprobs_LK = np.zeros((length, k), np.float32)
    tail_L = np.full((length,), -np.inf, np.float32)
    for segment in np.unique(segments_L[segments_L > 0]):
        where = np.flatnonzero(segments_L == segment)
        ids, logprobs, tail = topk_fn(inputs_L[where][None])
        ids_LK[where], logprobs_LK[where], tail_L[where] = ids[0], logprobs[0], tail[0]
    return ids_LK, logprobs_LK, tail_L


def write_cache(
    directory: str | Path,
    spec: CacheSpec,
    examples: list[dict],
    topk_fn: TopKFn,
    *,
    num_shards: int = 1,
    process_index: int = 0,
    process_count: int = 1,
    progress: bool = True,
) -> dict:
    """Run the teacher over `examples` (dicts of (L,) int32 arrays) into `num_shards` shards.

    Shard s holds examples s, s + num_shards, ... (so every shard has a similar mix); process p writes
    the shards with s % process_count == p. The manifest is written once every shard is finished, and
    returned (empty while other processes' shards are unfinished).
    """
    from tqdm import tqdm

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    _check_existing_spec(directory, spec)
    (directory / "spec.json").write_text(json.dumps(dataclasses.asdict(spec), indent=2))
    todo = [s for s in range(num_shards) if s % process_count == process_index
            and not _shard_is_done(directory / shard_name(s, num_shards))]
    total = sum(len(range(s, len(examples), num_shards)) for s in todo)
    bar = tqdm(total=total, disable=not progress, desc="teacher top-k", unit="seq")
    for s in todo:
        members = [examples[i] for i in range(s, len(examples), num_shards)]
        _write_shard(directory, s, num_shards, spec, members, topk_fn, bar)
    bar.close()
    return finalize_manifest(directory, spec, num_shards)


def _shard_is_done(path: Path) -> bool:
    """A shard is finished when its marker is readable and the file matches the marker's size and checksum.

    A marker alone is not enough: a shard deleted or damaged after it was written must be written again
    when `bitjax cache-teacher` is rerun, which is the fix the reader's errors name. A stale marker is removed.
    """
    marker_path = path.with_suffix(".done.json")
    if not marker_path.exists():
        return False
    try:
        marker = json.loads(marker_path.read_text())
        ok = path.is_file() and marker["file"] == path.name and _sha256(path) == marker["sha256"]
    except (ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        marker_path.unlink()
    return ok


def _write_shard(directory, s, num_shards, spec, members, topk_fn, bar) -> None:
    final = directory / shard_name(s, num_shards)
    tmp = final.with_name(final.name + f".tmp{os.getpid()}")
    writer = ArrayRecordWriter(str(tmp), "group_size:1")
    try:
        for index, example in enumerate(members):
            ids, logprobs, tail = example_topk(topk_fn, example, spec.k)
            _check_finite(logprobs, tail, final, index)
            writer.write(encode_record(spec, example, ids, logprobs, tail))
            bar.update(1)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    writer.close()
    os.replace(tmp, final)
    marker = {"file": final.name, "records": len(members), "sha256": _sha256(final)}
    marker_tmp = final.with_suffix(".done.json.tmp")
    marker_tmp.write_text(json.dumps(marker))
    os.replace(marker_tmp, final.with_suffix(".done.json"))


def _check_finite(logprobs, tail, path, record) -> None:
    if not np.isfinite(np.asarray(logprobs, np.float32)).all() or np.isnan(np.asarray(tail)).any():
        raise CacheError(
            f"{path}: the teacher returned NaN/Inf log-probabilities for record {record}; "
            "check the teacher model (and its dtype); nothing of this shard was kept")


def _check_existing_spec(directory: Path, spec: CacheSpec) -> None:
    path = directory / "spec.json"
    if path.exists():
        old = CacheSpec(**json.loads(path.read_text()))
        if old != spec:
            raise CacheError(
                f"{path} describes a different cache ({old}); write to a new directory or delete this one")


def finalize_manifest(directory: Path, spec: CacheSpec, num_shards: int) -> dict:
    markers = []
    for s in range(num_shards):
        marker_path = (directory / shard_name(s, num_shards)).with_suffix(".done.json")
        if not marker_path.exists():
            return {}  # other processes still writing; the last one to finish writes the manifest
        markers.append(json.loads(marker_path.read_text()))
    manifest = {
        "format": FORMAT, "version": VERSION, **dataclasses.asdict(spec),
        "bytes_per_token": spec.bytes_per_token(),
        "records": sum(m["records"] for m in markers), "shards": markers,
    }
    tmp = directory / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2))
    os.replace(tmp, directory / "manifest.json")
    return manifest


# --------------------------------------------------------------------------- reading

class TopKCache:
    """Random access to a finished cache, checked against the student it will train."""

    def __init__(self, directory: str | Path, *, verify_checksums: bool = True):
        self.directory = Path(directory)
        manifest_path = self.directory / "manifest.json"
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
        try:
            self.spec = CacheSpec(**{name: self.manifest[name] for name in needed[:-1]})
        except (TypeError, ValueError) as e:
            raise CacheError(f"{manifest_path} holds an unusable cache description ({e}); {rerun}") from None
        self._readers, self._offsets = [], [0]
        for shard in self.manifest["shards"]:
            path = self.directory / shard["file"]
            if not path.exists():
                raise CacheError(f"{path} is missing; rerun `bitjax cache-teacher` to rewrite it")
            if verify_checksums and _sha256(path) != shard["sha256"]:
                raise CacheError(f"{path} does not match its checksum (truncated or changed); rerun "
                                 "`bitjax cache-teacher` with the same arguments: it rewrites such shards")
            try:
                reader = ArrayRecordReader(str(path))
                n = reader.num_records()
            except Exception as e:  # array_record raises plain RuntimeErrors on damaged files
                raise CacheError(f"{path} cannot be read ({e}); rerun `bitjax cache-teacher` with the same "
                                 "arguments: it rewrites such shards") from None
            if n != shard["records"]:
                raise CacheError(f"{path} holds {n} records, its marker says {shard['records']}; rewrite it")
            self._readers.append((path, reader))
            self._offsets.append(self._offsets[-1] + n)

    def check_compatible(self, tokenizer_fingerprint: str, vocab_size: int, seq_len: int) -> None:
        where = self.directory / "manifest.json"
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

    def _locate(self, index: int) -> tuple[Path, object, int]:
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

    def _check_record(self, record: dict, path: Path, local: int) -> None:
        """Every field the shape the manifest promises, ids inside the vocabulary, finite log-probabilities."""
        L, K = self.spec.seq_len, self.spec.k
        want = {**{name: (L,) for name in SEQUENCE_FIELDS}, "ids": (L, K), "logprobs": (L, K), "tail_logprob": (L,)}
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
            raise CacheError(f"{path}: record {local} holds a NaN or positive tail log-probability; delete "
                             f"{path.name} and rerun `bitjax cache-teacher`: it rewrites missing shards")

    def example(self, e: int) -> int:
        """The record index of the e-th example written (`write_cache` deals examples to shards in turn)."""
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
