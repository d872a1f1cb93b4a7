"""Tokens the web page never samples: those whose bytes are not UTF-8 text on their own.

wllama streams every token through llama.cpp's server code as JSON, and that code stops the runtime ("invalid
UTF-8 byte", the page must be reloaded) when the text holds bytes that do not form UTF-8, such as the second
half of a character with no first half before it. A byte-level BPE vocabulary (GPT-2's alphabet, which
bitjax's tokenizers and SmolLM2's use) holds such tokens: the single bytes 0x80-0xFF and merges that end or
start inside a character. Sampling one at a temperature above 0 happens (seen with the 60-step tiny run).
The export lists them in bitjax-web.json and the page gives them a logit bias of minus infinity, so every
token it can produce is whole text and any continuation streams; the cost is that a character the tokenizer
only spells across several tokens (rare ones: some CJK, emoji) cannot be generated in the page.
"""

from __future__ import annotations

from pathlib import Path

import gguf


def byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet (the `tokenizers` ByteLevel pre-tokenizer's): stand-in character -> byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, shifted = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + shifted)] = b
            shifted += 1
    return chars


def partial_text_tokens(path: str | Path) -> list[int]:
    """Ids of the GGUF's normal tokens whose bytes are not valid UTF-8 on their own."""
    reader = gguf.GGUFReader(path)
    tokens = reader.get_field(gguf.Keys.Tokenizer.LIST).contents()
    kinds = reader.get_field(gguf.Keys.Tokenizer.TOKEN_TYPE).contents()
    decoder, partial = byte_decoder(), []
    for i, (token, kind) in enumerate(zip(tokens, kinds)):
        if kind != gguf.TokenType.NORMAL:
            continue   # control and added tokens are plain text, not byte-level spellings
        try:
            bytes(decoder[c] for c in token).decode("utf-8")
        except (KeyError, UnicodeDecodeError):
            partial.append(i)
    return partial
