"""Tokenizers through the Hugging Face `tokenizers` library: train a byte-level BPE, load, fingerprint."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

EOS = "<|endoftext|>"


def train_bpe(texts: list[str], vocab_size: int) -> Tokenizer:
    """A GPT-2-style byte-level BPE trained on `texts`; id 0 is the end-of-text token."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[EOS], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def load(path: str | Path) -> Tokenizer:
    path = Path(path)
    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises a bare Exception on malformed JSON
        raise ValueError(f"{path}: not a valid tokenizer.json ({e}); delete it to rebuild") from None


def save_atomic(tok: Tokenizer, path: str | Path) -> None:
    """Write tokenizer.json via a temporary file and rename, so a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
    tok.save(str(tmp))
    os.replace(tmp, path)


def fingerprint(tok: Tokenizer) -> str:
    """A short hash of the full tokenizer definition; artifacts record it and refuse a mismatch."""
    return hashlib.sha256(tok.to_str().encode()).hexdigest()[:16]


def eos_id(tok: Tokenizer) -> int:
    return tok.token_to_id(EOS)
