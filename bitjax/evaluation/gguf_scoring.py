"""A GGUF file scored and continued in llama.cpp (llama-cpp-python): RunScorer's two methods for an export.

    scorer = GGUFScorer("runs/tiny/student-tq2_0.gguf")
    scorer.continuation_scores([(context_ids, continuation_ids), ...])   # [(log p(continuation), greedy?), ...]
    scorer.greedy_continuations([prompt_ids, ...], max_new_tokens=64, stop_ids={eos})

Log-probabilities come from llama.cpp's logits at every position of the sequence (`logits_all`, as bitjax's GGUF
teacher reads them), one sequence at a time; continuations are greedy (the argmax of each next-token logits).
Why not the OpenAI-style completions endpoint of a llama.cpp server (lm-eval's `gguf` model): its echoed
prompt log-probabilities are shifted by one position in llama-cpp-python 0.3.36 (issue #1983 there) and absent
from llama.cpp's own server, so log-likelihood tasks would score the wrong tokens.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from bitjax.errors import ConfigError


class GGUFScorer:
    """A GGUF model in llama.cpp as a scorer of continuations and a greedy decoder (CPU threads: `n_threads`)."""

    batch_size = 1   # llama.cpp evaluates one sequence at a time here

    def __init__(self, path: str | Path, *, max_length: int | None = None, n_threads: int | None = None):
        try:
            from llama_cpp import Llama
        except ImportError:
            raise ConfigError("scoring a GGUF file needs llama-cpp-python: pip install 'bitjax[export]'") from None
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"gguf={path}: no such file; pass a .gguf file written by `bitjax export --format gguf`")
        if max_length is not None and max_length < 2:
            raise ConfigError(f"max_length={max_length}: score at least two tokens at a time")
        try:   # n_ctx=0: llama.cpp's own choice, the context the model was trained for
            self.llm = Llama(model_path=str(path), n_ctx=max_length or 0, n_batch=min(max_length or 512, 512),
                             logits_all=True, n_threads=n_threads, n_threads_batch=n_threads, verbose=False)
        except ValueError as e:   # llama-cpp-python's "Failed to load model from file"
            raise ConfigError(f"gguf={path}: llama.cpp cannot load it ({e}); export it again with `bitjax export "
                              "--format gguf`") from None
        self.max_length = self.llm.n_ctx()

    def _logprobs(self, tokens: Sequence[int]) -> np.ndarray:
        """(len(tokens), V) float64 log-probabilities of each next token."""
        self.llm.reset()
        self.llm.eval(list(tokens))
        z = np.asarray(self.llm.scores[:len(tokens)], np.float64)
        z -= z.max(axis=-1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))

    def continuation_scores(self, requests: Sequence[tuple[Sequence[int], Sequence[int]]]
                            ) -> list[tuple[float, bool]]:
        out = []
        for context, continuation in requests:
            tokens = (list(context) + list(continuation))[-(self.max_length + 1):]
            n = len(continuation)
            logp_LV = self._logprobs(tokens[:-1])[-n:]
            targets = np.asarray(tokens[-n:])
            out.append((float(logp_LV[np.arange(n), targets].sum()), bool(np.all(logp_LV.argmax(-1) == targets))))
        return out

    def greedy_continuations(self, prompts: Sequence[Sequence[int]], *, max_new_tokens: int, stop_ids: set[int],
                             finished: Callable[[list[int]], bool] = lambda ids: False) -> list[list[int]]:
        room = self.max_length - max_new_tokens
        if room < 1:
            raise ConfigError(f"{max_new_tokens} new tokens leave no room for a prompt in the model's context of "
                              f"{self.max_length} tokens; ask for fewer")
        results = []
        for prompt in prompts:
            self.llm.reset()
            self.llm.eval(list(prompt)[-room:])
            out: list[int] = []
            for _ in range(max_new_tokens):
                token = int(np.argmax(self.llm.scores[self.llm.n_tokens - 1]))
                if token in stop_ids:
                    break
                out.append(token)
                if finished(out):
                    break
                self.llm.eval([token])
            results.append(out)
        return results
