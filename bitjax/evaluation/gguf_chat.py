"""An exported GGUF answering chat prompts in llama.cpp, greedily: what `bitjax eval FILE.gguf --task` asks, so
the accuracy bitjax measured on a run can be measured again on its export, in the runtime users run.

The prompt is rendered with the chat template stored in the GGUF and tokenized by llama.cpp's own tokenizer
(the GGUF's vocabulary and merges), after the boundary token every trained document starts with, as
bitjax.run.chat does for the run.
"""

from __future__ import annotations

from pathlib import Path

from bitjax.errors import ConfigError
from bitjax.evaluation.gguf_scoring import GGUFScorer
from bitjax.run.chat import Completion
from bitjax.tokenizer import CHAT_TEMPLATE, render_chat


class GGUFChatModel:
    batch_size = 1

    def __init__(self, path: str | Path, *, n_threads: int | None = None):
        self.scorer = GGUFScorer(path, n_threads=n_threads)
        self.llm = self.scorer.llm
        self.template = self.llm.metadata.get("tokenizer.chat_template") or CHAT_TEMPLATE
        self.eos = self.llm.token_eos()
        self.name = f"llama.cpp:{Path(path).name}"

    def render(self, messages: list[dict]) -> str:
        return render_chat(self.template, messages)

    def complete_many(self, prompts: list[str], *, max_new_tokens: int, temperature: float, top_p: float,
                      seeds: list[int], on_batch=None) -> list[Completion]:
        if temperature != 0:
            raise ConfigError("a GGUF is evaluated greedily here; leave --samples at 1 (sample with the run itself)")
        ids = [[self.eos] + self.llm.tokenize(p.encode("utf-8"), add_bos=False, special=True) for p in prompts]
        made = self.scorer.greedy_continuations(ids, max_new_tokens=max_new_tokens, stop_ids={self.eos})
        out = []
        for tokens in made:
            text = self.llm.detokenize(tokens).decode("utf-8", errors="replace").strip()
            out.append(Completion(text, "length" if len(tokens) >= max_new_tokens else "stop", len(tokens)))
        return out
