"""Writing a teacher top-k cache (the format: teacher_files.topk_cache), resumably, by one or many processes.

    write_cache(directory, spec, examples, teacher, n_examples=n, num_shards=S, process_index=p, process_count=P)

`examples` are the first n sequences a source streams (dicts of (L,) int32 arrays; a list, or an iterator with
`n_examples`). Shard s holds examples `shard_range(s, n, S)`; process p writes the shards with s % P == p,
streaming through the examples once. `teacher` is either
  - a function tokens (1, n) -> (ids, log-probs, tail), run on each packed document alone (`example_topk`), or
  - a `RowTeacher`, which computes many packed rows per call (the JAX teacher: each row's documents are kept
    apart by their segment ids inside one forward pass).

Commit protocol, the same on a local disk and on gs://: a shard is written to a local temporary file, then
renamed into place (local: atomic) or uploaded (gs://: one object upload, which appears whole or not at all;
a bucket has no atomic rename), and only then its `.done.json` marker is written: the marker is the commit
point. A rerun keeps every shard whose marker matches its file and rewrites the rest; the manifest is written
by whichever process finds every marker present.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import shutil
import tempfile
from typing import Callable, Iterable

import numpy as np
from array_record.python.array_record_module import ArrayRecordWriter
from etils import epath

from bitjax.data.teacher_files.topk_cache import (
    FORMAT,
    MANIFEST,
    SPEC_FILE,
    VERSION,
    CacheSpec,
    encode_record,
    marker_path,
    sha256,
    shard_name,
    shard_range,
)
from bitjax.errors import CacheError
from bitjax.paths import cache_location, is_remote, write_atomic

TopKFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]
"""tokens (1, n) -> (ids (1, n, E), logprobs (1, n, E), tail_logprob (1, n)), e.g. `lambda t: teacher.topk(t, k)`"""


@dataclasses.dataclass(frozen=True)
class RowTeacher:
    """A teacher of whole packed rows.

    `topk_rows(examples)`, for at most `rows_per_call` examples, returns ids (R, L, E), log-probs (R, L, E) and
    tail (R, L) with R >= len(examples) (rows past the examples are padding; arrays may be device arrays, read
    when written, so the next call overlaps the writing). `agree_calls(n)` is the number of calls every process
    makes when this one needs n: a teacher sharded over several processes runs each call on all of them.
    """

    topk_rows: Callable[[list[dict]], tuple]
    rows_per_call: int = 1
    agree_calls: Callable[[int], int] = int


def example_topk(topk_fn: TopKFn, example: dict, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Teacher top-k for every position of a packed example, one document (segment) at a time.

    Padding (segment 0) gets id 0, log-prob 0 and tail -inf; it carries no loss.
    """
    inputs_L, segments_L = np.asarray(example["inputs"]), np.asarray(example["segment_ids"])
    length = len(inputs_L)
    ids_LE = np.zeros((length, k), np.int32)
    logprobs_LE = np.zeros((length, k), np.float32)
    tail_L = np.full((length,), -np.inf, np.float32)
    for segment in np.unique(segments_L[segments_L > 0]):
        where = np.flatnonzero(segments_L == segment)
        ids, logprobs, tail = topk_fn(inputs_L[where][None])
        ids_LE[where], logprobs_LE[where], tail_L[where] = ids[0], logprobs[0], tail[0]
    return ids_LE, logprobs_LE, tail_L


def per_document(topk_fn: TopKFn, k: int) -> RowTeacher:
    """A per-document teacher function as a RowTeacher of one row per call."""
    def rows(examples):
        return tuple(np.stack(parts) for parts in zip(*(example_topk(topk_fn, ex, k) for ex in examples)))
    return RowTeacher(rows, rows_per_call=1)


def write_cache(
    directory: str | os.PathLike,
    spec: CacheSpec,
    examples: Iterable[dict],
    teacher: TopKFn | RowTeacher,
    *,
    n_examples: int | None = None,
    num_shards: int = 1,
    process_index: int = 0,
    process_count: int = 1,
    progress: bool = True,
) -> dict:
    """Run the teacher over the examples into `num_shards` shards; returns the manifest once every shard is
    finished (empty while other processes' shards are not). The progress bar counts positions (tokens)."""
    from tqdm import tqdm

    if n_examples is None:
        examples = list(examples)
        n_examples = len(examples)
    rows_teacher = teacher if isinstance(teacher, RowTeacher) else per_document(teacher, spec.k)
    directory = cache_location(directory, "cache directory")
    directory.mkdir(parents=True, exist_ok=True)
    _check_existing_spec(directory, spec)
    write_atomic(directory / SPEC_FILE, json.dumps(dataclasses.asdict(spec), indent=2).encode())
    todo = [s for s in range(num_shards) if s % process_count == process_index
            and not _shard_is_done(directory / shard_name(s, num_shards))]
    sizes = {s: len(shard_range(s, n_examples, num_shards)) for s in todo}
    rows = _todo_rows(iter(examples), n_examples, num_shards, todo)
    calls = rows_teacher.agree_calls(-(-sum(sizes.values()) // rows_teacher.rows_per_call))
    bar = tqdm(total=sum(sizes.values()) * spec.seq_len, disable=not progress, desc="teacher top-k", unit="tok",
               unit_scale=True, dynamic_ncols=True)
    sink = _ShardSink(directory, spec, num_shards, sizes, bar)
    pending = None
    try:
        for _ in range(calls):
            chunk = list(itertools.islice(rows, rows_teacher.rows_per_call))
            result = rows_teacher.topk_rows([example for _, example in chunk])
            if pending is not None:
                sink.write(*pending)   # the previous call's rows, while this call computes
            pending = (chunk, result)
        if pending is not None:
            sink.write(*pending)
    except BaseException:
        sink.discard()
        raise
    finally:
        sink.close()
        bar.close()
    return finalize_manifest(directory, spec, num_shards)


def _todo_rows(examples, n_examples: int, num_shards: int, todo: list[int]):
    """(shard, example) for every example of the shards in `todo`, in order, reading the stream once (the
    examples of other shards are passed over: packing them costs no teacher time)."""
    position = 0   # the index of the next example `examples` yields
    for s in todo:
        wanted = shard_range(s, n_examples, num_shards)
        for _ in itertools.islice(examples, wanted.start - position):
            pass
        position = wanted.start
        for example in itertools.islice(examples, len(wanted)):
            position += 1
            yield s, example
        if position < wanted.stop:
            raise CacheError(f"the source streamed {position} sequences, fewer than the {n_examples} to cache")


class _ShardSink:
    """Records in shard order into one open shard at a time, each shard committed when its last record is in."""

    def __init__(self, directory: epath.Path, spec: CacheSpec, num_shards: int, sizes: dict[int, int], bar):
        self.directory, self.spec, self.num_shards, self.sizes, self.bar = directory, spec, num_shards, sizes, bar
        self.shard, self.writer, self.tmp, self.count = None, None, None, 0
        self.tmp_dir = tempfile.mkdtemp(prefix="bitjax-cache-") if is_remote(directory) else None
        for s in [s for s, size in sizes.items() if size == 0]:   # more shards than examples: empty ones
            self._open(s)
            self._commit()

    def write(self, chunk: list[tuple[int, dict]], result) -> None:
        if not chunk:   # a call made only to keep step with other processes
            return
        ids, logprobs, tail = (np.asarray(a) for a in result)
        for row, (s, example) in enumerate(chunk):
            if self.shard != s:
                self._open(s)
            _check_finite(logprobs[row], tail[row], self.directory / shard_name(s, self.num_shards), self.count)
            self.writer.write(encode_record(self.spec, example, ids[row], logprobs[row], tail[row]))
            self.count += 1
            if self.count == self.sizes[s]:
                self._commit()
        self.bar.update(len(chunk) * self.spec.seq_len)

    def _open(self, s: int) -> None:
        name = shard_name(s, self.num_shards)
        # ArrayRecord writes local files: beside the shard on a local disk (so the rename stays on one file
        # system), in a temporary directory for a bucket
        self.tmp = (os.path.join(self.tmp_dir, name) if self.tmp_dir
                    else os.fspath(self.directory / f"{name}.tmp{os.getpid()}"))
        self.shard, self.count = s, 0
        self.writer = ArrayRecordWriter(self.tmp, "group_size:1")

    def _commit(self) -> None:
        self.writer.close()
        final = self.directory / shard_name(self.shard, self.num_shards)
        marker = {"file": final.name, "records": self.count, "bytes": os.path.getsize(self.tmp),
                  "sha256": sha256(self.tmp)}
        if self.tmp_dir:
            with open(self.tmp, "rb") as src, final.open("wb") as dst:   # one upload: the object appears whole
                shutil.copyfileobj(src, dst, 1 << 24)
            os.remove(self.tmp)
        else:
            os.replace(self.tmp, os.fspath(final))
        write_atomic(marker_path(final), json.dumps(marker).encode())   # the commit point
        self.shard, self.writer, self.tmp = None, None, None

    def discard(self) -> None:
        """Drop the shard being written (a failed or killed run): nothing of it is kept."""
        if self.writer is not None:
            self.writer.close()
            os.remove(self.tmp)
            self.shard, self.writer, self.tmp = None, None, None

    def close(self) -> None:
        if self.tmp_dir:
            shutil.rmtree(self.tmp_dir, ignore_errors=True)


def _shard_is_done(path: epath.Path) -> bool:
    """A shard is finished when its marker is readable and the file matches it: its SHA-256 on a local disk,
    its size in a bucket (reading every shard back would cost the whole cache's transfer).

    A marker alone is not enough: a shard deleted or damaged after it was written must be written again
    when `bitjax cache-teacher` is rerun, which is the fix the reader's errors name. A stale marker is removed.
    """
    marker_file = marker_path(path)
    if not marker_file.exists():
        return False
    try:
        marker = json.loads(marker_file.read_text())
        ok = path.is_file() and marker["file"] == path.name
        if ok and is_remote(path):
            ok = path.stat().length == marker["bytes"]
        elif ok:
            ok = sha256(path) == marker["sha256"]
    except (ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        marker_file.unlink()
    return ok


def _check_finite(logprobs, tail, path, record) -> None:
    if not np.isfinite(np.asarray(logprobs, np.float32)).all() or np.isnan(np.asarray(tail)).any():
        raise CacheError(
            f"{path}: the teacher returned NaN/Inf log-probabilities for record {record}; "
            "check the teacher model (and its dtype); nothing of this shard was kept")


def _check_existing_spec(directory: epath.Path, spec: CacheSpec) -> None:
    path = directory / SPEC_FILE
    if path.exists():
        old = CacheSpec(**json.loads(path.read_text()))
        if old != spec:
            raise CacheError(
                f"{path} describes a different cache ({old}); write this one to a new directory (--out NEW_DIR), "
                "or rerun with the settings that cache was written with")


def finalize_manifest(directory: epath.Path, spec: CacheSpec, num_shards: int) -> dict:
    """Write the manifest once every shard's marker is present (any process may be the last); {} before."""
    markers = []
    for s in range(num_shards):
        marker_file = marker_path(directory / shard_name(s, num_shards))
        if not marker_file.exists():
            return {}  # other processes still writing; the last one to finish writes the manifest
        markers.append(json.loads(marker_file.read_text()))
    manifest = {
        "format": FORMAT, "version": VERSION, **dataclasses.asdict(spec),
        "bytes_per_token": spec.bytes_per_token(),
        "records": sum(m["records"] for m in markers), "shards": markers,
    }
    write_atomic(directory / MANIFEST, json.dumps(manifest, indent=2).encode())
    return manifest
