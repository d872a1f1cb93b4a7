"""Streamed text sources: files sharded over the data shards, read a chunk at a time and tokenized on the fly.

For data shard j of S, a streamed source's documents come from this Grain pipeline:
  files[j::S] (sorted by path)      in a new order every epoch (MapDataset.shuffle, then repeat)
  -> per file: its chunks (bitjax.data.sources.text_files), read and tokenized on `data.read_threads` Grain threads
     with the `tokenizers` batch encoder (which itself runs on every core), then one document at a time
  -> InterleaveIterDataset: FILES_OPEN files read at once, their documents alternating (one at a time, in
     stored order, when not shuffled: held-out documents)
  -> WindowShuffleIterDataset: `data.shuffle_window` documents shuffled at a time
and are then packed and mixed like every source (bitjax.data.pipeline). Each stage's iterator state is a few
integers (file in the epoch, chunk, document in the chunk, window position), so the data position saved in a
checkpoint is exact mid-file, and restoring it re-reads one chunk per open file and one window. A data shard
holds at most FILES_OPEN x (read_threads + 2) chunks and one window of documents in memory, whatever the size
of the corpus.

Held-out documents: a document is held out when a hash of its text falls below `data.heldout_fraction`
(`is_heldout`). Training and evaluation call the same function, so no held-out document reaches training; it
needs no pass over the source (a tail would need its length), and the same text in two files, a common kind of
duplicate in web corpora, falls on the same side.
"""

from __future__ import annotations

import atexit
import functools
import gc
import hashlib
import weakref
from concurrent.futures import ThreadPoolExecutor

import grain

from bitjax.data.sources.examples import DocumentExamples
from bitjax.data.sources.token_shard import tokenize_documents
from bitjax.errors import DataError

FILES_OPEN = 4   # files a data shard reads at once: more mix better; each holds its chunks in memory


def is_heldout(text: str, fraction: float) -> bool:
    """Whether a document is held out: the first 8 bytes of BLAKE2b(text) below `fraction` of their range."""
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") < fraction * 2.0**64


class _Flatten(grain.experimental.FlatMapTransform):
    """A chunk's documents, one at a time (Grain keeps the chunk and the index in it as the position)."""

    def flat_map(self, element):
        return element


class StreamedText:
    """A text source read lazily from its files (`bitjax.data.sources.text_files` readers, sorted by path)."""

    def __init__(self, name: str, files: list, tok, fingerprint: str, boundary_id: int, *, heldout_fraction: float,
                 seed: int, shuffle_window: int, read_threads: int):
        self.name, self.files = name, files
        self.tok, self.fingerprint, self.boundary_id = tok, fingerprint, boundary_id
        self.heldout_fraction, self.seed = heldout_fraction, seed
        self.shuffle_window, self.read_threads = shuffle_window, read_threads

    def documents(self, split: str, shard_index: int, num_shards: int, *, shuffle: bool,
                  repeat: bool) -> grain.IterDataset:
        """Document pairs (bitjax.data.sources.examples.DocumentExamples items) of one data shard of a split."""
        if len(self.files) < num_shards:
            raise DataError(f"data source {self.name!r} has {len(self.files)} file(s), fewer than the {num_shards} "
                            "data shards (a streamed source is sharded by file); split it into at least "
                            f"{num_shards} files, or use fewer shards (data.num_shards)")
        if split == "heldout" and repeat and not self._holds_heldout:   # else a repeated pass would yield nothing
            raise DataError(f"data source {self.name!r}: none of its documents is held out at data.heldout_fraction="
                            f"{self.heldout_fraction} (held out by a hash of the text); raise the fraction or add "
                            "documents")
        files = grain.MapDataset.source(self.files[shard_index::num_shards])
        cycle = min(FILES_OPEN, len(files)) if shuffle else 1   # unshuffled: in stored order, file by file
        if shuffle:
            files = files.seed(self.seed).shuffle()   # a new file order every epoch
        files = files.repeat(None if repeat else 1).map(functools.partial(self._file_documents, split))
        docs = grain.experimental.InterleaveIterDataset(files, cycle_length=cycle)
        if shuffle:
            docs = grain.experimental.WindowShuffleIterDataset(docs, window_size=self.shuffle_window,
                                                               seed=self.seed)
        return _ClosedAtExit(docs)

    def _file_documents(self, split: str, file) -> grain.IterDataset:
        chunks = grain.MapDataset.range(file.num_chunks()).map(functools.partial(self._read_chunk, split, file))
        options = grain.ReadOptions(num_threads=self.read_threads, prefetch_buffer_size=self.read_threads)
        return grain.experimental.FlatMapIterDataset(chunks.to_iter_dataset(options), _Flatten())

    def _read_chunk(self, split: str, file, k: int) -> list[dict]:
        heldout = split == "heldout"
        docs = [d for d in file.read_chunk(k) if is_heldout(d["text"], self.heldout_fraction) == heldout]
        examples = DocumentExamples(tokenize_documents(docs, self.tok, str(file.path), self.fingerprint),
                                    self.boundary_id)
        return [examples[i] for i in range(len(examples))]

    @functools.cached_property
    def _holds_heldout(self) -> bool:
        """Whether some document is held out: read in stored order up to the first (about 1/fraction of them)."""
        return any(is_heldout(d["text"], self.heldout_fraction)
                   for file in self.files for k in range(file.num_chunks()) for d in file.read_chunk(k))

    def estimated_tokens(self) -> int:
        """Training tokens estimated from file metadata (text_files sizes) and one tokenized chunk."""
        sample = self.files[0]
        docs = sample.read_chunk(0)
        tokens = tokenize_documents(docs, self.tok, str(sample.path), self.fingerprint).n_tokens
        with ThreadPoolExecutor(16) as pool:   # each is a round trip to a bucket: run them side by side
            total = sum(pool.map(lambda f: f.size(), self.files))
        return int(tokens / max(sample.chunk_size(0), 1) * total * (1 - self.heldout_fraction))


# Grain's thread-prefetch iterators (one per open file) that are still referenced when the interpreter shuts
# down print tracebacks from their finalizers, whose modules are gone by then. At exit, before that, every
# streamed iterator is closed and lets go of its parents, so they are finalized while their modules exist.
_OPEN_ITERATORS: weakref.WeakSet = weakref.WeakSet()


class _ClosedAtExit(grain.IterDataset):
    def __iter__(self):
        iterator = self._parent.__iter__()
        _OPEN_ITERATORS.add(iterator)
        return iterator


@atexit.register
def _close_open_iterators() -> None:
    for iterator in list(_OPEN_ITERATORS):
        iterator.close()
        iterator.__dict__.clear()
        iterator._closed = True   # its own finalizer then returns at once
    gc.collect()
