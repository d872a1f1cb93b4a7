"""The trainer's view of the data: build every source, one tokenizer, and the mixed, packed, sharded stream.

    pipeline = build_pipeline(cfg.data, teacher_cache=cfg.distill.cache, vocab_size=cfg.model.vocab_size)
    it = pipeline.train_iterator(jax.process_index(), jax.process_count())   # a grain.DatasetIterator
    batch = next(it)       # inputs, targets, segment_ids, positions, loss_mask: (B, L) int32; source_id (B,)
    counts = pipeline.token_counts(batch)   # {source name: tokens in this batch}

Every source yields rows of one schema, whatever it holds, so Grain's `IterDataset.mix` can mix them:
  text (objective "ce")  documents -> hold out the tail -> shard -> shuffle -> repeat -> pack (data.packing);
                         a streamed text source (bitjax.data.sources.streaming) instead shards its files, tokenizes
                         them on the fly, holds out by a hash of the text and shuffles within a window
  text (objective "kd")  the sequences cached with the teacher's top-k (bitjax.data.teacher_files.topk_cache), with
                         teacher_ids / teacher_logprobs (B, L, E) and teacher_tail (B, L); other rows carry
                         zeros there when any source distils. Once they are used up: the cache again, or
                         (on_cache_exhausted="ce") the text after them under CE (bitjax.data.teacher_files.cache_stream)
  traces, "sft"          positive traces as prompt/completion documents, packed first-fit (kept whole)
  traces, "redi"         one row per positive/negative pair: segment 1 the positive, segment 2 the negative
Rows are tagged with their source's index (`source_id`), which selects the loss (bitjax.losses.objectives).
The global stream is split into data shards (bitjax.data.shards); the iterator state of every shard
(each source's position and the mix index) is saved in the Orbax checkpoint.
"""

from __future__ import annotations

import hashlib
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import grain
import numpy as np

from bitjax import tokenizer as tokenizer_lib
from bitjax.config import DataConfig, SourceConfig
from bitjax.data import epoch_shuffle
from bitjax.data import mix as mix_lib
from bitjax.data import shards as shards_lib
from bitjax.data.pack import PairExamples, pack
from bitjax.data.sources import uris
from bitjax.data.sources.examples import DocumentExamples
from bitjax.data.sources.streaming import StreamedText
from bitjax.data.sources.token_directory import ShardSet, load_tokens
from bitjax.data.sources.token_shard import TokenShard, load_shard, save_shard, tokenize_documents
from bitjax.data.teacher_files import cache_stream, topk_cache
from bitjax.data.teacher_files import traces as traces_lib
from bitjax.errors import CacheError, ConfigError, DataError
from bitjax.losses.objectives import OBJECTIVES
from bitjax.paths import cache_dir, cache_location


@dataclass
class PreparedSource:
    config: SourceConfig
    train: TokenShard | ShardSet | None = None             # text and "sft" documents, tokenized whole
    heldout: TokenShard | ShardSet | None = None           # text: the held-out tail, for evaluation
    stream: StreamedText | None = None                     # a streamed text source (instead of the two above)
    pairs: PairExamples | None = None                      # "redi"
    cache: object | None = None                            # "kd" while training: a teacher_files.topk_cache.TopKCache

    @property
    def objective(self) -> str:
        return self.config.resolved_objective

    @property
    def rows(self) -> str:
        """How this source's rows are built (bitjax.losses.objectives.RowKind)."""
        return OBJECTIVES[self.objective].rows


_fields = uris.fields_of


def _is_traces(src: SourceConfig) -> bool:
    return src.reads == "traces"


def _text_documents(src: SourceConfig) -> list[dict]:
    return uris.load_documents(src.uri, _fields(src), src.data_dir)


# A BPE trained on the text sources reads this many documents of a streamed source (its first, in file
# order), not the whole corpus; a real run names a tokenizer instead.
BPE_SAMPLE_DOCUMENTS = 20_000


def resolve_tokenizer(cfg: DataConfig) -> Path:
    """The tokenizer.json of a data config: named, converted from a GGUF, or a BPE trained on its text."""
    text_sources = [s for s in cfg.sources if uris.parse_uri(s.uri)[0] in uris.TEXT_KINDS]
    trained = cfg.tokenizer in ("bpe", "bpe-digits")
    if trained and not text_sources:
        raise ConfigError(f"data.tokenizer={cfg.tokenizer} needs at least one text source to train on; "
                          "name the tokenizer.json the token shards were made with")
    corpus_key = ("|".join(uris.content_key(s.uri, _fields(s), s.data_dir) for s in text_sources)
                  if trained else "")

    def texts():
        for s in text_sources:
            docs = (uris.sample_documents(s.uri, _fields(s), s.data_dir, BPE_SAMPLE_DOCUMENTS)
                    if uris.streams(s) else _text_documents(s))
            for doc in docs:
                yield doc.get("prompt", "") + doc["text"]

    return tokenizer_lib.resolve(cfg.tokenizer, cfg.vocab_size, texts, cache_dir(), corpus_key)


def _cached_tokens(name: str, key: str, documents, tok, fingerprint: str, label: str) -> TokenShard:
    """Tokenize documents once per (source, content, tokenizer) and keep the shard in the cache dir."""
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    directory = cache_dir() / "tokens" / f"{name}-{digest}-{fingerprint}"
    if not (directory / "meta.json").exists():
        save_shard(tokenize_documents(documents(), tok, label), directory)
    return load_shard(directory, fingerprint, derived=True)


def _tokenized(src: SourceConfig, tok, fingerprint: str) -> TokenShard | ShardSet:
    """A text source's tokens: a `tokens:` directory as given, or text tokenized once and cached."""
    kind, location = uris.parse_uri(src.uri)
    if kind == "tokens":
        return load_tokens(location, fingerprint, vocab_size=tok.get_vocab_size())
    return _cached_tokens(src.name, uris.content_key(src.uri, _fields(src), src.data_dir),
                          lambda: _text_documents(src), tok, fingerprint, src.uri)


def _split_heldout(shard: TokenShard | ShardSet, fraction: float, name: str) -> tuple:
    n = len(shard)
    n_heldout = max(1, math.ceil(n * fraction))
    if n - n_heldout < 1:
        raise DataError(f"data source {name!r} ({shard.source}) has {n} document(s); it needs at least 2 "
                        "(one held out for evaluation)")
    return shard.slice(0, n - n_heldout), shard.slice(n - n_heldout, n)


class Pipeline:
    """What the trainer needs from the data side: resumable train iterator, held-out batches, the tokenizer.

    `teacher_cache`: the directory of per-source teacher caches; "kd" sources then read their cached
    sequences and teacher fields from `teacher_cache/<name>`. Without it, "kd" sources stream their text
    like "ce" sources (this is how `bitjax cache-teacher` reads the sequences it caches).
    `text_only`: leave trace sources out (for callers that read text alone: caching, evaluation).
    """

    def __init__(self, cfg: DataConfig, *, teacher_cache: str = "", vocab_size: int | None = None,
                 text_only: bool = False):
        self.cfg = cfg
        self.tokenizer_path = resolve_tokenizer(cfg)
        tok = tokenizer_lib.load(self.tokenizer_path)
        self.tokenizer_fingerprint = tokenizer_lib.fingerprint(tok)
        self.vocab_size = tok.get_vocab_size()
        self.boundary_id = tokenizer_lib.eos_id(tok)
        self.weights = mix_lib.normalize_weights(cfg.mixture_weights())
        self.source_names = [s.name for s in cfg.row_sources()]   # a row's source_id indexes this
        self.sources: dict[str, PreparedSource] = {}
        for src in cfg.sources:
            if src.name not in self.weights or (text_only and _is_traces(src)):
                continue  # weight 0 (or traces, for callers that only read text): not read at all
            self.sources[src.name] = self._prepare(src, tok)
        self.teacher_k = 0
        self.teacher_logprob_dtype = "float16"
        self.teacher_vocab_size = vocab_size or self.vocab_size
        if teacher_cache:
            self._open_caches(cache_location(teacher_cache, "distill.cache"), vocab_size or self.vocab_size)

    def _prepare(self, src: SourceConfig, tok) -> PreparedSource:
        """Tokenize (or open) a source as its objective's rows need it."""
        prepare = {"packed_text": self._prepare_text, "teacher_cache": self._prepare_text,
                   "packed_completions": self._prepare_completions, "trace_pairs": self._prepare_pairs}
        return prepare[OBJECTIVES[src.resolved_objective].rows](src, tok)

    def _prepare_text(self, src: SourceConfig, tok) -> PreparedSource:
        if uris.streams(src):
            files = uris.text_files(src.uri, _fields(src), src.data_dir)
            seed = self.cfg.shuffle_seed + 7919 * self.source_names.index(src.name)
            return PreparedSource(src, stream=StreamedText(
                src.name, files, tok, self.tokenizer_fingerprint, self.boundary_id, seed=seed,
                heldout_fraction=self.cfg.heldout_fraction, shuffle_window=self.cfg.shuffle_window,
                read_threads=self.cfg.read_threads))
        train, heldout = _split_heldout(_tokenized(src, tok, self.tokenizer_fingerprint),
                                        self.cfg.heldout_fraction, src.name)
        return PreparedSource(src, train=train, heldout=heldout)

    def _prepare_completions(self, src: SourceConfig, tok) -> PreparedSource:
        path = uris.parse_uri(src.uri)[1]
        docs = traces_lib.sft_documents(traces_lib.read_traces(path))
        if not docs:
            raise DataError(f"{path}: no positive trace to train on (objective {src.resolved_objective}); "
                            "sample more traces or drop the source")
        key = uris.content_key(src.uri) + src.resolved_objective
        return PreparedSource(src, train=_cached_tokens(src.name, key, lambda: docs, tok,
                                                        self.tokenizer_fingerprint, src.uri))

    def _prepare_pairs(self, src: SourceConfig, tok) -> PreparedSource:
        path = uris.parse_uri(src.uri)[1]
        key = uris.content_key(src.uri) + src.resolved_objective
        positives, negatives = traces_lib.redi_pairs(traces_lib.read_traces(path))
        if not positives:
            raise DataError(f"{path}: no prompt has both a positive and a negative trace, so REDI has no pair; "
                            "sample more completions per prompt (bitjax traces --samples)")
        pos = _cached_tokens(src.name + "-pos", key, lambda: positives, tok, self.tokenizer_fingerprint, src.uri)
        neg = _cached_tokens(src.name + "-neg", key, lambda: negatives, tok, self.tokenizer_fingerprint, src.uri)
        pairs = PairExamples(pos, neg, self.boundary_id, self.cfg.seq_len)
        if len(pairs) == 0:
            raise DataError(f"{path}: none of its {pairs.total} REDI pairs fits in data.seq_len={self.cfg.seq_len}"
                            f" (the shortest needs {pairs.shortest}); raise data.seq_len")
        if len(pairs) < pairs.total:
            print(f"bitjax: data source {src.name!r}: {pairs.total - len(pairs)} of {pairs.total} REDI pairs are "
                  f"longer than data.seq_len={self.cfg.seq_len} and are left out; raise data.seq_len to keep them",
                  file=sys.stderr)
        return PreparedSource(src, pairs=pairs)

    def _open_caches(self, root, vocab_size: int) -> None:
        for name, p in self.sources.items():
            if p.rows != "teacher_cache":
                continue
            cache = topk_cache.TopKCache(root / name)
            cache.check_compatible(self.tokenizer_fingerprint, vocab_size, self.cfg.seq_len)
            if self.teacher_k and cache.spec.k != self.teacher_k:
                raise CacheError(f"{root / name}: k={cache.spec.k}, other sources' caches have "
                                            f"k={self.teacher_k}; rebuild the caches with one k")
            if self.teacher_k and cache.spec.logprob_dtype != self.teacher_logprob_dtype:
                raise CacheError(f"{root / name}: log-probabilities in {cache.spec.logprob_dtype}, other sources' "
                                 f"caches in {self.teacher_logprob_dtype}; rebuild the caches with one dtype")
            self.teacher_k = cache.spec.k
            self.teacher_logprob_dtype = cache.spec.logprob_dtype
            self.teacher_vocab_size = cache.spec.vocab_size
            # The cache holds the sequences this source streamed when it was written: check a few still agree.
            expected = self.source_examples(name)
            for e in range(min(2, len(cache))):
                cache.aligned_example(e, next(expected)["inputs"])
            p.cache = cache

    # ---------------------------------------------------------------- streams

    def _documents(self, name: str, split: str, *, shard_index: int, num_shards: int, shuffle: bool,
                   repeat: bool) -> tuple[grain.IterDataset, int | None, int]:
        """A text source's document pairs in one data shard of a split ("train" or "heldout"): the stream,
        how many documents a pass holds (None when streamed) and the longest one's tokens (for packing)."""
        p = self.sources[name]
        if p.stream is not None:   # files sharded, tokenized on the fly, shuffled within a window
            docs = p.stream.documents(split, shard_index, num_shards, shuffle=shuffle, repeat=repeat)
            return docs, None, self.cfg.seq_len
        shard = {"train": p.train, "heldout": p.heldout}[split]
        ds = grain.MapDataset.source(DocumentExamples(shard, self.boundary_id))
        ds = self._shard_shuffle_repeat(name, ds, shard_index, num_shards, shuffle, repeat, shard)
        # Reading a document is a slice of a memory-mapped array: prefetch threads would only add locking.
        return ds.to_iter_dataset(grain.ReadOptions(num_threads=0)), len(ds), shard.max_doc_tokens

    def _text_stream(self, name: str, split: str, *, shard_index: int, num_shards: int, shuffle: bool,
                     repeat: bool, packing: str) -> grain.IterDataset:
        docs, n, max_doc_tokens = self._documents(name, split, shard_index=shard_index, num_shards=num_shards,
                                                  shuffle=shuffle, repeat=repeat)
        stream = pack(docs, self.cfg.seq_len, packing, max_doc_tokens=max_doc_tokens, seed=self.cfg.shuffle_seed)
        return self._dry_check(stream, name, repeat, n)

    def _row_stream(self, name: str, rows, *, shard_index: int, num_shards: int,
                    read_threads: int = 0) -> grain.IterDataset:
        """Sources whose elements are already whole rows (cached sequences, REDI pairs).

        `read_threads`: Grain threads that read and check rows ahead of the training loop (cache records are
        decoded from ArrayRecord, which is worth taking off the loop thread); order and checkpoints are kept.
        """
        repeat = self.cfg.on_exhausted == "repeat"
        ds = self._shard_shuffle_repeat(name, grain.MapDataset.source(rows), shard_index, num_shards, True,
                                        repeat, rows)
        options = grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=4 * max(read_threads, 1))
        return self._dry_check(ds.to_iter_dataset(options), name, repeat, len(ds))

    def _shard_shuffle_repeat(self, name, ds, shard_index, num_shards, shuffle, repeat, what):
        if repeat and 0 < len(ds) < num_shards:
            # A repeating source smaller than the shard count (a small sample on a pod slice) is repeated
            # before it is split, so every shard reads some of it; larger sources are split as they are.
            ds = ds.repeat(-(-num_shards // len(ds)))
        ds = ds[shard_index::num_shards]
        if len(ds) == 0:
            raise DataError(f"data source {name!r} has {len(what)} training examples, fewer than the "
                            f"{num_shards} data shards; add data or use fewer shards (data.num_shards)")
        if shuffle:
            ds = epoch_shuffle.shuffle(ds, self.cfg.shuffle_seed + 7919 * self.source_names.index(name))
        return ds.repeat(None if repeat else 1)

    @staticmethod
    def _dry_check(stream, name: str, repeat: bool, n: int):
        return stream if repeat else mix_lib.RaiseWhenDry(stream, name, n)

    def _source_stream(self, name: str, shard_index: int, num_shards: int) -> grain.IterDataset:
        p = self.sources[name]
        if p.cache is not None and p.config.text_after_cache is not None:
            return self._cache_then_text(name, shard_index, num_shards)
        repeat = self.cfg.on_exhausted == "repeat"
        if p.cache is not None:
            stream = self._row_stream(name, p.cache, shard_index=shard_index, num_shards=num_shards,
                                      read_threads=CACHE_READ_THREADS)
        elif p.pairs is not None:
            stream = self._row_stream(name, p.pairs, shard_index=shard_index, num_shards=num_shards)
        else:  # text, or trace completions packed first-fit so that a trace keeps its prompt
            packing = "first_fit" if p.rows == "packed_completions" else self.cfg.packing
            stream = self._text_stream(name, "train", shard_index=shard_index, num_shards=num_shards,
                                       shuffle=True, repeat=repeat, packing=packing)
        stream = mix_lib.tag_source(stream, self.source_names.index(name))
        if self.teacher_k and p.cache is None:
            stream = mix_lib.add_empty_teacher(stream, self.cfg.seq_len, self.teacher_k, self.teacher_vocab_size,
                                               self.teacher_logprob_dtype)
        return stream

    def _cache_then_text(self, name: str, shard_index: int, num_shards: int) -> grain.IterDataset:
        """A "kd" source's cached rows once, then its text after them under CE (teacher_files.cache_stream)."""
        p, index = self.sources[name], self.source_names.index(name)
        records = grain.MapDataset.source(p.cache)[shard_index::num_shards]
        cached = None
        if len(records):   # more data shards than cached sequences: this one starts on the text
            options = grain.ReadOptions(num_threads=CACHE_READ_THREADS, prefetch_buffer_size=4 * CACHE_READ_THREADS)
            records = epoch_shuffle.shuffle(records, self.cfg.shuffle_seed + 7919 * index)
            cached = mix_lib.tag_source(records.to_iter_dataset(options), index)
        text = self._text_stream(name, "train", shard_index=0, num_shards=1, shuffle=True,
                                 repeat=self.cfg.on_exhausted == "repeat", packing=self.cfg.packing)
        text = cache_stream.EveryNth(text, len(p.cache) + shard_index, num_shards)
        text = mix_lib.tag_source(text, self.source_names.index(p.config.text_after_cache.name))
        text = mix_lib.add_empty_teacher(text, self.cfg.seq_len, self.teacher_k, self.teacher_vocab_size,
                                         self.teacher_logprob_dtype)
        return cache_stream.CacheThenText(cached, text)

    def source_examples(self, name: str):
        """A text source's packed sequences in the order one data shard streams them (what a cache stores)."""
        p = self.sources[name]
        if (p.train is None and p.stream is None) or _is_traces(p.config):
            raise ConfigError(f"data source {name!r} is not a text source")
        return iter(self._text_stream(name, "train", shard_index=0, num_shards=1, shuffle=True, repeat=True,
                                      packing=self.cfg.packing))

    def train_dataset(self, shard_index: int = 0, num_shards: int = 1) -> grain.IterDataset:
        """One data shard's stream of batches of data.batch_size / num_shards rows."""
        streams = {name: self._source_stream(name, shard_index, num_shards) for name in self.sources}
        return mix_lib.mix(streams, self.weights).batch(self.cfg.batch_size // num_shards, drop_remainder=True)

    def default_shards(self, process_count: int) -> int:
        """data.num_shards, or one shard per process."""
        return self.cfg.num_shards or process_count

    def train_iterator(self, process_index: int = 0, process_count: int = 1,
                       num_shards: int | None = None) -> shards_lib.ShardGroupIterator:
        """This process's rows of the training batches; its state goes into every checkpoint."""
        num_shards = num_shards or self.default_shards(process_count)
        shards_lib.check_shards(num_shards, process_count, self.cfg.batch_size)
        return shards_lib.ShardGroupIterator(lambda j: self.train_dataset(j, num_shards),
                                             shards_lib.owned_shards(process_index, process_count, num_shards),
                                             num_shards)

    # ---------------------------------------------------------------- evaluation

    def text_sources(self) -> list[str]:
        """Sources of natural-language text (not traces): what held-out perplexity is measured on."""
        return [n for n, p in self.sources.items() if p.heldout is not None or p.stream is not None]

    def heldout_batches(self, n_batches: int) -> list[dict[str, np.ndarray]]:
        """The first n_batches of the text sources' held-out documents, mixed by weight, in stored order."""
        names = self.text_sources()
        if not names:
            return []
        weights = mix_lib.normalize_weights({n: self.weights[n] for n in names})
        packed = {name: self._text_stream(name, "heldout", shard_index=0, num_shards=1, shuffle=False,
                                          repeat=True, packing=self.cfg.packing)
                  for name in names}
        it = iter(mix_lib.mix(packed, weights).batch(self.cfg.batch_size, drop_remainder=True))
        return [next(it) for _ in range(n_batches)]

    def heldout_tokens(self, n_tokens: int, source: str | None = None) -> np.ndarray:
        """The first `n_tokens` of a source's held-out documents as one stream, each document after a BOS.

        For runtimes that read one plain sequence (llama.cpp, transformers); defaults to the first text source.
        """
        name = source or self.text_sources()[0]
        docs, _, _ = self._documents(name, "heldout", shard_index=0, num_shards=1, shuffle=False, repeat=False)
        pieces, total = [], 0
        for doc in docs:   # in stored order, one pass
            pieces.append(doc["inputs"])   # [BOS] + the document's ids
            total += len(doc["inputs"])
            if total >= n_tokens:
                break
        return np.concatenate(pieces)[:n_tokens]

    def token_counts(self, batch: dict) -> dict[str, int]:
        """Non-padding tokens per source in a batch, from its `source_id` (empty for untagged batches)."""
        if "source_id" not in batch:
            return {}
        return mix_lib.token_counts(batch["source_id"], batch["segment_ids"], self.source_names)


CACHE_READ_THREADS = 2   # per cache source; enough to keep one decode ahead of a step on a CPU host


def build_pipeline(cfg: DataConfig, *, teacher_cache: str = "", vocab_size: int | None = None,
                   text_only: bool = False) -> Pipeline:
    return Pipeline(cfg, teacher_cache=teacher_cache, vocab_size=vocab_size, text_only=text_only)
