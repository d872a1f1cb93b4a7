"""The trainer's view of the data: build every source, one tokenizer, and the mixed, packed, sharded stream.

    pipeline = build_pipeline(cfg.data)
    it = pipeline.train_iterator(jax.process_index(), jax.process_count())   # a grain.DatasetIterator
    batch = next(it)                      # inputs, targets, segment_ids, positions, loss_mask: (B, L) int32
    counts = pipeline.pop_token_counts(batch)   # {source name: tokens in this batch}; removes `source_id`

Per source: documents -> hold out the tail -> shard by process (`ds[i::n]`, disjoint and covering) ->
shuffle (reshuffled each epoch) -> repeat or stop -> pack -> tag. Then mix the sources by weight and batch.
The iterator's state (every source's position and the mix index) is saved in the Orbax checkpoint.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import grain
import numpy as np

from bitjax import tokenizer as tokenizer_lib
from bitjax.config import ConfigError, DataConfig, SourceConfig
from bitjax.data import mix as mix_lib
from bitjax.data import sources as sources_lib
from bitjax.data.pack import DocumentExamples, pack
from bitjax.data.sources import DataError, Fields
from bitjax.data.tokenize import TokenShard, load_shard, save_shard, tokenize_documents


@dataclass
class PreparedSource:
    config: SourceConfig
    train: TokenShard
    heldout: TokenShard


def _fields(src: SourceConfig) -> Fields:
    return Fields(text=src.text_field, prompt=src.prompt_field)


def _text_documents(src: SourceConfig) -> list[dict]:
    return sources_lib.load_documents(src.uri, _fields(src))


def _tokenizer_path(cfg: DataConfig) -> Path:
    text_sources = [s for s in cfg.sources if sources_lib.parse_uri(s.uri)[0] != "tokens"]
    if cfg.tokenizer == "bpe" and not text_sources:
        raise ConfigError("data.tokenizer=bpe needs at least one text source to train on; "
                          "name the tokenizer.json the token shards were made with")
    corpus_key = "|".join(sources_lib.content_key(s.uri, _fields(s)) for s in text_sources)

    def texts():
        for s in text_sources:
            for doc in _text_documents(s):
                yield doc.get("prompt", "") + doc["text"]

    return tokenizer_lib.resolve(cfg.tokenizer, cfg.vocab_size, texts, sources_lib.cache_dir(), corpus_key)


def _tokenized(src: SourceConfig, tok, fingerprint: str) -> TokenShard:
    """The source's tokens: a `tokens:` shard as given, or text tokenized once and cached."""
    kind, location = sources_lib.parse_uri(src.uri)
    if kind == "tokens":
        return load_shard(location, fingerprint)
    key = hashlib.sha256(sources_lib.content_key(src.uri, _fields(src)).encode()).hexdigest()[:16]
    directory = sources_lib.cache_dir() / "tokens" / f"{src.name}-{key}-{fingerprint}"
    if not (directory / "meta.json").exists():
        save_shard(tokenize_documents(_text_documents(src), tok, src.uri), directory)
    return load_shard(directory, fingerprint)


def _split_heldout(shard: TokenShard, fraction: float, name: str) -> tuple[TokenShard, TokenShard]:
    n = len(shard)
    n_heldout = max(1, math.ceil(n * fraction))
    if n - n_heldout < 1:
        raise DataError(f"data source {name!r} ({shard.source}) has {n} document(s); it needs at least 2 "
                        "(one held out for evaluation)")
    return shard.slice(0, n - n_heldout), shard.slice(n - n_heldout, n)


class Pipeline:
    """What the trainer needs from the data side: resumable train iterator, held-out batches, the tokenizer."""

    def __init__(self, cfg: DataConfig):
        self.cfg = cfg
        self.tokenizer_path = _tokenizer_path(cfg)
        tok = tokenizer_lib.load(self.tokenizer_path)
        self.tokenizer_fingerprint = tokenizer_lib.fingerprint(tok)
        self.vocab_size = tok.get_vocab_size()
        self.boundary_id = tokenizer_lib.eos_id(tok)
        self.weights = mix_lib.normalize_weights(cfg.mixture_weights())
        self.source_names = [s.name for s in cfg.sources]
        self.sources: dict[str, PreparedSource] = {}
        for src in cfg.sources:
            if src.name not in self.weights:
                continue  # weight 0: not read at all
            train, heldout = _split_heldout(_tokenized(src, tok, self.tokenizer_fingerprint),
                                            cfg.heldout_fraction, src.name)
            self.sources[src.name] = PreparedSource(src, train, heldout)

    # ---------------------------------------------------------------- streams

    def _packed_source(self, name: str, shard: TokenShard, *, process_index: int, process_count: int,
                       shuffle: bool, repeat: bool) -> grain.IterDataset:
        ds = grain.MapDataset.source(DocumentExamples(shard, self.boundary_id))
        ds = ds[process_index::process_count]
        if len(ds) == 0:
            raise DataError(f"data source {name!r} has {len(shard)} training documents, fewer than the "
                            f"{process_count} processes; add data or use fewer processes")
        if shuffle:
            seed = self.cfg.shuffle_seed + 7919 * self.source_names.index(name)
            ds = ds.seed(seed).shuffle()
        ds = ds.repeat(None if repeat else 1)
        doc_lengths = np.diff(shard.offsets)
        # Reading a document is a slice of a memory-mapped array: prefetch threads would only add locking.
        stream = pack(ds.to_iter_dataset(grain.ReadOptions(num_threads=0)), self.cfg.seq_len, self.cfg.packing,
                      max_doc_tokens=int(doc_lengths.max()), seed=self.cfg.shuffle_seed)
        if not repeat:
            stream = mix_lib.RaiseWhenDry(stream, name, len(ds))
        return mix_lib.tag_source(stream, self.source_names.index(name))

    def train_dataset(self, process_index: int = 0, process_count: int = 1) -> grain.IterDataset:
        """This process's infinite (or, with on_exhausted=error, finite) stream of training batches."""
        if self.cfg.batch_size % process_count:
            raise ConfigError(f"data.batch_size={self.cfg.batch_size} is not divisible by {process_count} processes")
        packed = {name: self._packed_source(name, p.train, process_index=process_index,
                                            process_count=process_count, shuffle=True,
                                            repeat=self.cfg.on_exhausted == "repeat")
                  for name, p in self.sources.items()}
        mixed = mix_lib.mix(packed, self.weights)
        return mixed.batch(self.cfg.batch_size // process_count, drop_remainder=True)

    def train_iterator(self, process_index: int = 0, process_count: int = 1) -> grain.DatasetIterator:
        """This process's shard of the training batches; its state goes into every checkpoint."""
        return iter(self.train_dataset(process_index, process_count))

    def heldout_batches(self, n_batches: int) -> list[dict[str, np.ndarray]]:
        """The first n_batches of the held-out documents, mixed by weight, in stored order (a fixed eval set)."""
        packed = {name: self._packed_source(name, p.heldout, process_index=0, process_count=1, shuffle=False,
                                            repeat=True)
                  for name, p in self.sources.items()}
        it = iter(mix_lib.mix(packed, self.weights).batch(self.cfg.batch_size, drop_remainder=True))
        batches = [next(it) for _ in range(n_batches)]
        for b in batches:
            b.pop("source_id")
        return batches

    def pop_token_counts(self, batch: dict) -> dict[str, int]:
        """Remove the batch's `source_id` (the model does not take it) and count its tokens per source.

        Batches from elsewhere (a teacher cache) carry no `source_id` and count nothing."""
        if "source_id" not in batch:
            return {}
        return mix_lib.token_counts(batch.pop("source_id"), batch["segment_ids"], self.source_names)


def build_pipeline(cfg: DataConfig) -> Pipeline:
    return Pipeline(cfg)
