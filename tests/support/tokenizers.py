"""Byte-level BPE tokenizers of the families students are converted from, trained here on a little Shakespeare.

`family_tokenizer(path, "qwen2")` splits with Qwen2's regex (DeepSeek-R1-Distill-Qwen's and Qwen3's) and ends
documents with `<｜end▁of▁sentence｜>`, R1-Distill's boundary token; "llama-bpe" with Llama 3's regex and
`<|end_of_text|>`. Neither has bitjax's `<|endoftext|>`.
"""

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

from bitjax.export.gguf_tokenizer import PRE_TOKENIZERS

REGEX = {name: regex for regex, name in PRE_TOKENIZERS.items()}
BOUNDARY = {"qwen2": "<｜end▁of▁sentence｜>", "llama-bpe": "<|end_of_text|>"}   # llama.cpp pre name -> token


def family_tokenizer(path, pre: str, vocab_size: int = 1000) -> Tokenizer:
    """A `pre`-family tokenizer of `vocab_size` tokens, saved as `path` (a tokenizer.json) and returned."""
    from bitjax.data.sources import corpora

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(REGEX[pre]), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[BOUNDARY[pre]], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([d["text"] for d in list(corpora.shakespeare_documents())[:3]], trainer=trainer)
    tok.save(str(path))
    return tok
