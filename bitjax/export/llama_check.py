"""Run an exported GGUF in llama.cpp (llama-cpp-python) and measure it against bitjax's forward pass."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

from bitjax.export import checks
from bitjax.export.common import ExportError
from bitjax.export.gguf_writer import ARCH_NAME


def llama_cpp_version() -> str:
    import llama_cpp

    return llama_cpp.__version__


def file_activation(path: str | Path) -> str:
    field = gguf.GGUFReader(path).get_field(f"{ARCH_NAME}.hidden_activation")
    return field.contents() if field is not None else "silu"


def runtime_problems(path: str | Path) -> list[str]:
    """Why the installed llama.cpp would compute this file differently from bitjax (empty if it would not)."""
    activation = file_activation(path)
    if activation == "silu":
        return []
    version = llama_cpp_version()
    how = ("runs the bitnet FFN SiLU-gated" if version in checks.SILU_ONLY_LLAMA_CPP_PYTHON
           else "may not run it (llama.cpp master does; llama-cpp-python 0.3.36 does not)")
    return [f"{path} declares bitnet.hidden_activation={activation!r}, but llama-cpp-python {version}'s llama.cpp "
            f"{how}: its logits are not this model's; export a SiLU-gated model ({checks.SILU_RECIPES})"]


def open_model(path: str | Path, n_ctx: int, n_threads: int = 2):
    from llama_cpp import Llama

    return Llama(model_path=str(path), n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx, logits_all=True,
                 n_threads=n_threads, n_threads_batch=n_threads, verbose=False)


def llama_logits(llm, tokens_L) -> np.ndarray:
    """(L, V) logits of one sequence, evaluated from an empty context."""
    llm.reset()
    llm.eval([int(t) for t in tokens_L])
    return np.array(llm.scores[:len(tokens_L)], np.float32)


def llama_greedy(llm, prompt, n_new: int) -> list[int]:
    llm.reset()
    llm.eval([int(t) for t in prompt])
    out = []
    for _ in range(n_new):
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        out.append(token)
        llm.eval([token])
    return out


def llama_tokenize(llm, text: str) -> list[int]:
    return llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)


def require_compatible(path: str | Path, allow_mismatch: bool) -> list[str]:
    problems = runtime_problems(path)
    if problems and not allow_mismatch:
        raise ExportError(problems[0] + "; pass --allow-runtime-mismatch to measure it anyway")
    return problems
