"""The tokenizers of converted students in GGUF: Qwen2's and Llama 3's split regexes and boundary tokens.

A byte-level BPE with Qwen2's (DeepSeek-R1-Distill-Qwen's, Qwen3's) split regex, or Llama 3's, and the boundary
token of that family instead of bitjax's `<|endoftext|>` is trained here on Shakespeare with `tokenizers`; the
GGUF export names the regex to llama.cpp (`tokenizer.ggml.pre`), and llama.cpp then splits the probe strings
(digits, spaces, accents, CJK) into the same ids as `tokenizers`. Named "gpt-2" instead, some strings split
differently (the two regexes cut punctuation, apostrophes and digits apart differently): what the test catches.
"""

import json

import gguf
import pytest
from tokenizers import Tokenizer

from bitjax import tokenizer as tokenizer_lib
from bitjax.errors import ExportError
from bitjax.export import llama_check
from bitjax.export.gguf_tokenizer import read_vocab
from bitjax.export.gguf_writer import write_gguf
from bitjax.export.runtime_report import TOKENIZER_PROBES
from tests.support.random_models import random_model
from tests.support.tokenizers import BOUNDARY, family_tokenizer

pytest.importorskip("llama_cpp")

FAMILIES = BOUNDARY   # llama.cpp pre name -> the family's boundary token


def _tokenizer(path, pre: str, boundary: str) -> Tokenizer:
    return family_tokenizer(path, pre)


def _llama_cpp_ids(path, texts):
    llm = llama_check.open_model(path, n_ctx=64)
    try:
        return [llama_check.llama_tokenize(llm, t) for t in texts]
    finally:
        llm.close()


@pytest.mark.parametrize("pre", list(FAMILIES))
def test_a_converted_family_tokenizer_splits_alike_in_llama_cpp(tmp_path, pre):
    tok = _tokenizer(tmp_path / "tokenizer.json", pre, FAMILIES[pre])
    assert tokenizer_lib.eos_token(tok) == FAMILIES[pre]
    vocab = read_vocab(tmp_path / "tokenizer.json", 1024)
    assert vocab.pre == pre and vocab.tokens[vocab.eos_id] == FAMILIES[pre]
    _, _, model = random_model(tmp_path / "tokenizer.json", vocab_size=1024, sub_norms=False)
    write_gguf(model, tmp_path / "m.gguf", "f32")
    reader = gguf.GGUFReader(tmp_path / "m.gguf")
    assert reader.get_field("tokenizer.ggml.pre").contents() == pre
    assert reader.get_field("tokenizer.ggml.eos_token_id").contents() == tok.token_to_id(FAMILIES[pre])
    assert _llama_cpp_ids(tmp_path / "m.gguf", TOKENIZER_PROBES) == [tok.encode(t).ids for t in TOKENIZER_PROBES]

    # the same vocabulary under GPT-2's regex: llama.cpp then cuts some strings another way
    spec = json.loads((tmp_path / "tokenizer.json").read_text())
    spec["pre_tokenizer"] = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    (tmp_path / "gpt2").mkdir()
    (tmp_path / "gpt2" / "tokenizer.json").write_text(json.dumps(spec))
    _, _, model = random_model(tmp_path / "gpt2" / "tokenizer.json", vocab_size=1024, sub_norms=False)
    write_gguf(model, tmp_path / "gpt2.gguf", "f32")
    texts = [*TOKENIZER_PROBES, "[Enter KING and QUEEN]", "'Tis the o'er-hasty (yes), 1599 and 1600."]
    assert _llama_cpp_ids(tmp_path / "gpt2.gguf", texts) != [tok.encode(t).ids for t in texts]


def test_an_unknown_split_regex_is_one_line(tmp_path):
    _tokenizer(tmp_path / "tokenizer.json", "qwen2", FAMILIES["qwen2"])
    spec = json.loads((tmp_path / "tokenizer.json").read_text())
    spec["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = r"\p{N}+|\s+"
    (tmp_path / "tokenizer.json").write_text(json.dumps(spec))
    with pytest.raises(ExportError, match=r"its pre-tokenizer splits with .*a regex bitjax cannot name to llama.cpp"):
        read_vocab(tmp_path / "tokenizer.json", 1024)
