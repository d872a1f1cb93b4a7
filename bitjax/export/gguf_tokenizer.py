"""Tokenizer metadata for GGUF: a byte-level BPE `tokenizer.json` as llama.cpp's "gpt2" tokenizer.

llama.cpp rebuilds the tokenizer from `tokenizer.ggml.tokens` (byte-level strings, id order),
`tokenizer.ggml.token_type`, `tokenizer.ggml.merges` and the pre-tokenizer name, which selects its split
regex: "gpt-2" for the `tokenizers` ByteLevel pre-tokenizer's own regex (the tokenizers bitjax trains,
SmolLM2's), and for a tokenizer.json that splits with an explicit regex first, the llama.cpp name of that regex
(PRE_TOKENIZERS: Qwen2's, which DeepSeek-R1-Distill-Qwen and Qwen3 share, and Llama 3's). Another regex is a
one-line error: llama.cpp would split text differently from the tokenizer the model was trained with.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import gguf

from bitjax import tokenizer as tokenizer_lib
from bitjax.export.common import ExportError
from bitjax.tokenizer import CHAT_TEMPLATE

# The split regex of a tokenizer.json `Split` pre-tokenizer -> llama.cpp's `tokenizer.ggml.pre` for it
# (llama.cpp's llama-vocab.cpp holds the same regexes under these names).
PRE_TOKENIZERS = {
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+":
        "qwen2",
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|"
    r"\s+": "llama-bpe",
}


@dataclasses.dataclass(frozen=True)
class GGUFVocab:
    tokens: list[str]
    token_types: list[int]
    merges: list[str]
    eos_id: int
    pre: str = "gpt-2"     # llama.cpp's pre-tokenizer name


def _components(node: dict | None, kind: str) -> list[dict]:
    if not node:
        return []
    if node.get("type") == "Sequence":
        key = "pretokenizers" if kind == "pre" else "decoders"
        return [c for child in node.get(key, []) for c in _components(child, kind)]
    return [node]


def read_vocab(tokenizer_path: str | Path, vocab_size: int) -> GGUFVocab:
    """Tokens, types and merges for a model with `vocab_size` embedding rows (padding ids are UNUSED)."""
    path = Path(tokenizer_path)
    spec = json.loads(path.read_text(encoding="utf-8"))
    model = spec.get("model", {})
    components = _components(spec.get("pre_tokenizer"), "pre")
    pre = [c.get("type") for c in components]
    if model.get("type") != "BPE" or "ByteLevel" not in pre:
        raise ExportError(
            f"{path}: a {model.get('type')} tokenizer with pre-tokenizers {pre}; GGUF export supports the "
            "byte-level BPE tokenizers bitjax trains (llama.cpp's gpt2 tokenizer)")
    pre_name = _pre_tokenizer_name(path, components)
    id_to_token: dict[int, str] = {i: t for t, i in model["vocab"].items()}
    special, added = set(), set()
    for item in spec.get("added_tokens", []):
        id_to_token[item["id"]] = item["content"]
        (special if item.get("special") else added).add(item["id"])
    if max(id_to_token) >= vocab_size:
        raise ExportError(f"{path}: token id {max(id_to_token)} does not fit the model's vocab_size {vocab_size}; "
                          "export the run with the tokenizer it was trained with")
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in id_to_token:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        else:
            tokens.append(id_to_token[i])
            types.append(gguf.TokenType.CONTROL if i in special
                         else gguf.TokenType.USER_DEFINED if i in added else gguf.TokenType.NORMAL)
    # gguf's SpecialVocab reads both merge spellings of tokenizer.json ("a b" and ["a", "b"]).
    merges = gguf.SpecialVocab(path.parent, load_merges=True, special_token_types=()).merges \
        if path.name == "tokenizer.json" else []
    if not merges:
        raise ExportError(f"{path}: no BPE merges found; llama.cpp cannot tokenize without them")
    ids = {t: i for i, t in id_to_token.items()}
    eos = next((ids[t] for t in tokenizer_lib.BOUNDARY_TOKENS if t in ids), None)
    if eos is None:
        raise ExportError(f"{path}: none of {', '.join(tokenizer_lib.BOUNDARY_TOKENS)}; bitjax ends documents with "
                          "one of them")
    return GGUFVocab(tokens, [int(t) for t in types], merges, eos, pre_name)


def _pre_tokenizer_name(path: Path, components: list[dict]) -> str:
    """llama.cpp's name for the tokenizer's split: "gpt-2" for ByteLevel's own regex, else PRE_TOKENIZERS'."""
    splits = [c for c in components if c.get("type") == "Split"]
    if not splits:
        return "gpt-2"
    pattern = splits[0].get("pattern", {})
    regex = pattern.get("Regex", pattern.get("String"))
    if len(splits) > 1 or regex not in PRE_TOKENIZERS:
        raise ExportError(f"{path}: its pre-tokenizer splits with {regex!r}, a regex bitjax cannot name to llama.cpp "
                          f"(it knows {', '.join(sorted(set(PRE_TOKENIZERS.values())))} and gpt-2); export "
                          "--format packed for transformers instead")
    return PRE_TOKENIZERS[regex]


def add_tokenizer(writer: gguf.GGUFWriter, vocab: GGUFVocab) -> None:
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.token_types)
    writer.add_token_merges(vocab.merges)
    writer.add_bos_token_id(vocab.eos_id)   # GPT-2 style: one end-of-text token for both roles
    writer.add_eos_token_id(vocab.eos_id)
    writer.add_add_bos_token(False)          # bitjax trains without a leading BOS
    writer.add_add_eos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)
