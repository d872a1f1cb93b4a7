"""Tokenizer metadata for GGUF: a byte-level BPE `tokenizer.json` as llama.cpp's "gpt2" tokenizer.

llama.cpp rebuilds the tokenizer from `tokenizer.ggml.tokens` (byte-level strings, id order),
`tokenizer.ggml.token_type`, `tokenizer.ggml.merges` and the pre-tokenizer name; "gpt-2" selects the
same split regex as the `tokenizers` ByteLevel pre-tokenizer, so both give the same ids.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import gguf

from bitjax import tokenizer as tokenizer_lib
from bitjax.export.common import ExportError
from bitjax.tokenizer import CHAT_TEMPLATE


@dataclasses.dataclass(frozen=True)
class GGUFVocab:
    tokens: list[str]
    token_types: list[int]
    merges: list[str]
    eos_id: int


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
    pre = [c.get("type") for c in _components(spec.get("pre_tokenizer"), "pre")]
    if model.get("type") != "BPE" or "ByteLevel" not in pre:
        raise ExportError(
            f"{path}: a {model.get('type')} tokenizer with pre-tokenizers {pre}; GGUF export supports the "
            "byte-level BPE tokenizers bitjax trains (llama.cpp's gpt2 tokenizer)")
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
    eos = next((i for i, t in id_to_token.items() if t == tokenizer_lib.EOS), None)
    if eos is None:
        raise ExportError(f"{path}: no {tokenizer_lib.EOS} token; bitjax tokenizers end documents with it")
    return GGUFVocab(tokens, [int(t) for t in types], merges, eos)


def add_tokenizer(writer: gguf.GGUFWriter, vocab: GGUFVocab) -> None:
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.token_types)
    writer.add_token_merges(vocab.merges)
    writer.add_bos_token_id(vocab.eos_id)   # GPT-2 style: one end-of-text token for both roles
    writer.add_eos_token_id(vocab.eos_id)
    writer.add_add_bos_token(False)          # bitjax trains without a leading BOS
    writer.add_add_eos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)
