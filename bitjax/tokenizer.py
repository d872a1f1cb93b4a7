"""Tokenizers through the Hugging Face `tokenizers` library: train a byte-level BPE, load a tokenizer.json,
or build one from a GGUF's vocabulary and merges (so a student shares an embedded teacher's vocabulary).

Every artifact made with a tokenizer (token shards, checkpoints, caches) records `fingerprint(tok)`;
reading it with a different tokenizer is an error (`check_fingerprint`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from bitjax.errors import ConfigError
from bitjax.paths import embedded_gguf

EOS = "<|endoftext|>"
# Document-boundary tokens, looked for in this order: bitjax's own (GPT-2's and Qwen's too), then those of vocabularies
# students are converted from that lack it: DeepSeek-R1-Distill-Qwen's end of sentence, Llama 3's end of text.
BOUNDARY_TOKENS = (EOS, "<｜end▁of▁sentence｜>", "<|end_of_text|>")
# The chat template of a bitjax tokenizer: plain text, as no role tokens exist in a trained vocabulary (exports
# carry it, `bitjax generate --chat` renders it).
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)


def render_chat(template: str, messages: list[dict]) -> str:
    """A conversation in `template` (Jinja, as in GGUF and tokenizer_config.json), ready for the reply.

    A sandboxed environment: a template is data and runs no code of its own."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(template).render(messages=messages, add_generation_prompt=True, bos_token="",
                                            eos_token="")


class TokenizerMismatch(ConfigError):
    """An artifact was made with another tokenizer than the one in use."""


def train_bpe(texts: Iterable[str], vocab_size: int, *, split_digits: bool = False) -> Tokenizer:
    """A GPT-2-style byte-level BPE trained on `texts`; id 0 is the end-of-text token.

    `split_digits`: no merge joins two digits, so every number is spelt one digit per token (" 7" may be one
    token, "12" never is): arithmetic a small model can learn digit by digit. The pre-tokenizer and the merge
    ranks stay GPT-2's, so llama.cpp's "gpt2" tokenizer gives an exported GGUF the same ids."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=4 * vocab_size if split_digits else vocab_size, special_tokens=[EOS], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    return _without_digit_merges(tok, vocab_size) if split_digits else tok


def _without_digit_merges(trained: Tokenizer, vocab_size: int) -> Tokenizer:
    """`trained`'s merges in rank order, dropping those whose token holds two digits (and those built on them),
    up to `vocab_size` tokens: EOS, the 256 byte symbols, then the merges kept."""
    import json

    vocab = [EOS] + sorted(pre_tokenizers.ByteLevel.alphabet())
    known, merges = set(vocab), []
    for merge in json.loads(trained.to_str())["model"]["merges"]:
        a, b = merge.split(" ") if isinstance(merge, str) else merge
        token = a + b
        if len(vocab) >= vocab_size:
            break
        if a in known and b in known and token not in known and sum(c.isdigit() for c in token) <= 1:
            merges.append((a, b))
            known.add(token)
            vocab.append(token)
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(vocab)}, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([EOS])
    return tok


def load(path: str | Path) -> Tokenizer:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such tokenizer.json")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises a bare Exception on malformed JSON
        raise ConfigError(f"{path}: not a valid tokenizer.json ({e}); point data.tokenizer at a valid "
                          "tokenizer.json") from None


def from_gguf(path: str | Path) -> Tokenizer:
    """The tokenizer embedded in a GGUF (vocabulary, merges, pre-tokenizer), as a `tokenizers.Tokenizer`.

    transformers' GGUF converter does the mapping from `tokenizer.ggml.*` metadata; its output encodes to
    the same ids as llama.cpp's own tokenizer (tested against `llama_cpp.Llama(vocab_only=True)`).
    """
    from transformers import AutoTokenizer

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such GGUF file")
    try:
        hf = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    except Exception as e:
        raise ConfigError(f"{path}: cannot read a tokenizer from this GGUF ({e})") from None
    return Tokenizer.from_str(hf.backend_tokenizer.to_str())


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


def check_fingerprint(found: str | None, expected: str, artifact: str | Path) -> None:
    if found != expected:
        raise TokenizerMismatch(
            f"{artifact} was made with tokenizer {found}, but this run uses {expected}; "
            "rebuild it with the run's tokenizer (or use the tokenizer it was made with)")


def eos_token(tok: Tokenizer) -> str:
    """The document-boundary token's text (used as both BOS and EOS, GPT-2 style): the first of BOUNDARY_TOKENS
    the vocabulary holds."""
    found = next((t for t in BOUNDARY_TOKENS if tok.token_to_id(t) is not None), None)
    if found is None:
        raise ConfigError(f"the tokenizer has none of {', '.join(BOUNDARY_TOKENS)} to mark document boundaries; "
                          "use a tokenizer that has one")
    return found


def eos_id(tok: Tokenizer) -> int:
    """The document-boundary token's id (see `eos_token`)."""
    return tok.token_to_id(eos_token(tok))


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def resolve(spec: str, vocab_size: int, texts: Callable[[], Iterable[str]], cache: Path,
            corpus_key: str) -> Path:
    """The tokenizer.json for a data config's `tokenizer` spec, built and cached once.

    spec: "bpe" (train `vocab_size` on `texts()`), "bpe-digits" (the same, numbers spelt one digit per token),
    a tokenizer.json path, a .gguf path, or "smollm2".
    """
    if spec in ("bpe", "bpe-digits"):
        key = hashlib.sha256(f"{corpus_key}|{vocab_size}".encode()).hexdigest()[:16]
        path = cache / "tokenizers" / f"{spec}{vocab_size}-{key}" / "tokenizer.json"
        if not path.exists():
            save_atomic(train_bpe(texts(), vocab_size, split_digits=spec == "bpe-digits"), path)
        return path
    if spec == "smollm2":
        spec = str(embedded_gguf())
    source = Path(spec)
    if source.suffix == ".gguf":
        if not source.is_file():
            raise ConfigError(f"data.tokenizer={spec}: no such GGUF file")
        path = cache / "tokenizers" / f"gguf-{source.stem}-{file_digest(source)}" / "tokenizer.json"
        if not path.exists():
            save_atomic(from_gguf(source), path)
        return path
    load(source)  # validates
    return source
