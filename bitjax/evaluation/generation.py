"""`bitjax generate`: stream a continuation from any model bitjax makes, in the runtime it was made for.

    MODEL                                  runtime
    a .gguf file                           llama.cpp (llama-cpp-python), the file's own tokenizer
    a packed directory (config.json +      transformers' BitNetForCausalLM on CPU torch
      model.safetensors)
    a run directory (config.json +         bitjax's own key/value-cache decoder on the latest checkpoint
      checkpoints/)                        (the training forward: ternary weights, int8 activations)

Sampling is the same everywhere: temperature 0 decodes greedily, otherwise plain softmax sampling at that
temperature (no top-k/top-p, no repetition penalty), stopping at the end-of-text token or after
`max_new_tokens`. `chat=True` wraps the prompt in the model's chat template (the GGUF's, the packed
directory's tokenizer_config.json, or bitjax's plain one for a run directory).

Anything that cannot be run raises GenerationError with one line naming the input and the fix.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from bitjax import tokenizer as tokenizer_lib
from bitjax.export.common import ExportError
from bitjax.nn.decode import KVDecoder, float32_logits
from bitjax.paths import local_copy, user_path
from bitjax.run import Run
from bitjax.tokenizer import CHAT_TEMPLATE, render_chat

GGUF_MAGIC = b"GGUF"


class GenerationError(ExportError):
    """A model `bitjax generate` cannot run, named with the fix (an ExportError, so the CLI reports it)."""


@dataclasses.dataclass(frozen=True)
class Sampling:
    max_new_tokens: int = 64
    temperature: float = 0.8
    seed: int = 0

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise GenerationError(f"--max-new-tokens {self.max_new_tokens}: generate at least 1 token")
        if not self.temperature >= 0:
            raise GenerationError(f"--temperature {self.temperature}: use 0 (greedy) or a positive temperature")


def model_kind(path: str | Path) -> str:
    """'gguf', 'packed' or 'run'; GenerationError for anything else."""
    path = user_path(path, "MODEL")
    if not path.exists():
        raise GenerationError(f"{path} does not exist; pass a .gguf file, a packed directory or a run directory")
    if path.is_file():
        with path.open("rb") as f:
            if f.read(4) == GGUF_MAGIC:
                return "gguf"
        raise GenerationError(f"{path} is not a GGUF file (it does not start with the GGUF magic); pass a .gguf "
                              "file written by `bitjax export --format gguf`, a packed directory or a run directory")
    if (path / "config.json").is_file() and (path / "model.safetensors").is_file():
        return "packed"
    if (path / "config.json").is_file() and (path / "checkpoints").is_dir():
        return "run"
    raise GenerationError(f"{path} is neither a packed directory (config.json + model.safetensors) nor a run "
                          "directory (config.json + checkpoints/); pass what `bitjax export` or `bitjax train` wrote")


def generate(path: str | Path, prompt: str, sampling: Sampling = Sampling(), *, chat: bool = False,
             n_threads: int | None = None) -> Iterator[str]:
    """Open `path` (checked before anything slow) and stream the continuation of `prompt` as text pieces."""
    kind = model_kind(path)
    opener = {"gguf": _LlamaCpp, "packed": _Transformers, "run": _BitjaxRun}[kind]
    # llama.cpp and transformers open local files: a GGUF or packed directory on a bucket is copied down first
    local = user_path(path, "MODEL") if kind == "run" else local_copy(user_path(path, "MODEL"))
    model = opener(local, n_threads)
    text = render_chat(model.chat_template, [{"role": "user", "content": prompt}]) if chat else prompt
    return model.stream(text, sampling)


def sample(logits_V: np.ndarray, temperature: float, rng: np.random.Generator) -> int:
    """Greedy at temperature 0, else a draw from softmax(logits / temperature)."""
    if temperature == 0:
        return int(np.argmax(logits_V))
    z = logits_V.astype(np.float64) / temperature
    p = np.exp(z - z.max())
    return int(rng.choice(len(p), p=p / p.sum()))


class TextStream:
    """Token ids in, newly completed text out: decodes the whole continuation each time and emits the new
    suffix, holding back a trailing partial UTF-8 character (decoded as U+FFFD) until it completes."""

    def __init__(self, decode: Callable[[list[int]], str]):
        self._decode, self._ids, self._emitted = decode, [], 0

    def push(self, token: int) -> str:
        self._ids.append(int(token))
        text = self._decode(self._ids)
        if text.endswith("\ufffd"):
            return ""
        new, self._emitted = text[self._emitted:], len(text)
        return new


def _sampling_loop(prompt_ids: list[int], prefill, step, decode, eos_id: int, sampling: Sampling) -> Iterator[str]:
    """Shared by the transformers and bitjax backends: prefill(ids) -> logits, step(token) -> logits."""
    rng = np.random.default_rng(sampling.seed)
    stream = TextStream(decode)
    logits_V = prefill(prompt_ids)
    for i in range(sampling.max_new_tokens):
        token = sample(logits_V, sampling.temperature, rng)
        if token == eos_id:
            return
        piece = stream.push(token)
        if piece:
            yield piece
        if i + 1 < sampling.max_new_tokens:
            logits_V = step(token)


def _check_length(path: Path, n_prompt: int, sampling: Sampling, context: int) -> None:
    if n_prompt == 0:
        raise GenerationError("--prompt is empty; give at least one token of text")
    if n_prompt + sampling.max_new_tokens > context:
        raise GenerationError(f"{path}: a {n_prompt}-token prompt plus --max-new-tokens {sampling.max_new_tokens} "
                              f"exceeds the model's context of {context} tokens; shorten one of them")


class _LlamaCpp:
    """A GGUF in llama.cpp; the relu2 check and the tokenizer come from the file."""

    def __init__(self, path: Path, n_threads: int | None):
        import gguf

        from bitjax.export import llama_check  # lazy: the gguf package (export extra)

        try:
            reader = gguf.GGUFReader(path)
        except Exception as e:  # a truncated or corrupt file: numpy/struct errors of all kinds
            raise GenerationError(f"{path} is not a readable GGUF file ({type(e).__name__}: {e}); export it "
                                  "again with `bitjax export --format gguf`") from None
        problems = llama_check.runtime_problems(path) if _arch(reader) == "bitnet" else []
        if problems:
            raise GenerationError(problems[0])
        field = reader.get_field("tokenizer.chat_template")

        self.chat_template = field.contents() if field is not None else CHAT_TEMPLATE
        self.path, self.n_threads = path, n_threads or 2
        arch = _arch(reader)
        ctx = reader.get_field(f"{arch}.context_length")
        self.context = int(ctx.contents()) if ctx is not None else 2048

    def stream(self, prompt: str, sampling: Sampling) -> Iterator[str]:
        from llama_cpp import Llama

        try:
            llm = Llama(model_path=str(self.path), n_ctx=self.context, n_threads=self.n_threads,
                        n_threads_batch=self.n_threads, seed=sampling.seed, verbose=False)
        except ValueError as e:
            raise GenerationError(f"llama.cpp cannot load {self.path} ({e}); export it again") from None
        try:
            ids = llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=False)
            _check_length(self.path, len(ids), sampling, self.context)
            # llama.cpp samples greedily at temperature 0; otherwise disable every other sampler stage
            pieces = llm.create_completion(ids, max_tokens=sampling.max_new_tokens, temperature=sampling.temperature,
                                           top_k=0, top_p=1.0, min_p=0.0, repeat_penalty=1.0, seed=sampling.seed,
                                           stream=True)
            for chunk in pieces:
                text = chunk["choices"][0]["text"]
                if text:
                    yield text
        finally:
            llm.close()


def _arch(reader) -> str:
    field = reader.get_field("general.architecture")
    return field.contents() if field is not None else "?"


class _Transformers:
    """A packed directory in transformers' BitNetForCausalLM (CPU torch, eager), with its own tokenizer."""

    def __init__(self, path: Path, n_threads: int | None):
        import inspect

        import torch
        import transformers
        from transformers import AutoTokenizer

        from bitjax.export import hf_check  # lazy: with transformers and torch (export extra)

        if n_threads:
            torch.set_num_threads(n_threads)
        transformers.logging.set_verbosity_error()      # "no GPU" notes: stderr is for errors here
        transformers.logging.disable_progress_bar()
        self.path = path
        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        self.chat_template = self.tokenizer.chat_template or CHAT_TEMPLATE
        self.model = hf_check.load_model(path)
        # transformers 5.24 renamed `past_key_values` to `cache` (the old name warns); accept both
        self.cache_arg = "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"

    def stream(self, prompt: str, sampling: Sampling) -> Iterator[str]:
        import torch

        ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        _check_length(self.path, len(ids), sampling, self.model.config.max_position_embeddings)
        state = {}

        def forward(new_ids: list[int]) -> np.ndarray:
            with torch.no_grad():
                out = self.model(torch.tensor([new_ids]), use_cache=True, **{self.cache_arg: state.get("cache")})
            state["cache"] = getattr(out, self.cache_arg)
            return out.logits[0, -1].float().numpy()

        decode = lambda t: self.tokenizer.decode(t, skip_special_tokens=False)  # noqa: E731
        yield from _sampling_loop(ids, forward, lambda t: forward([t]), decode, self.tokenizer.eos_token_id, sampling)


class _BitjaxRun:
    """The latest checkpoint of a run directory, decoded by bitjax with a key/value cache (bitjax.nn.decode)."""

    def __init__(self, path: Path, n_threads: int | None):
        self.path = path
        self.run = Run(path)
        self.tokenizer = tokenizer_lib.load(self.run.tokenizer_path)
        self.eos_id = tokenizer_lib.eos_id(self.tokenizer)
        self.chat_template = CHAT_TEMPLATE

    def stream(self, prompt: str, sampling: Sampling) -> Iterator[str]:
        ids = self.tokenizer.encode(prompt).ids
        _check_length(self.path, len(ids), sampling, self.run.config.model.max_seq_len)
        decoder = KVDecoder(self.run.model_builder(), self.run.params, [np.asarray(ids, np.int32)],
                            max_new_tokens=sampling.max_new_tokens, select=float32_logits)
        prefill = lambda prompt_ids: np.asarray(decoder.prefill())[0]
        next_logits = lambda token: np.asarray(decoder.step(np.asarray([token])))[0]
        yield from _sampling_loop(ids, prefill, next_logits, self.tokenizer.decode, self.eos_id, sampling)
