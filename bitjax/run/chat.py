"""A trained run as a chat model: prompts in bitjax's plain chat template, answered in batches with a key/value
cache (bitjax.nn.decode), many prompts x samples per call, sharded over the run's devices.

    model = run_chat_model("runs/teacher")
    text = model.render([{"role": "user", "content": "2 + 3 = ?"}])   # "user: 2 + 3 = ?\nassistant: "
    done = model.complete_many([text] * 4, max_new_tokens=64, temperature=1.0, top_p=0.95, seeds=[0, 1, 2, 3])

Each row samples from its own seed (a row's text does not depend on its neighbours), so a trace sampled here is
the same whatever batch it was drawn in; greedy rows equal one-prompt-at-a-time decoding (tests/nn/test_decode.py).
`bitjax traces --teacher bitjax:RUN` and `bitjax eval --task` decode through it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np

from bitjax import tokenizer as tokenizer_lib
from bitjax.errors import ConfigError
from bitjax.nn.decode import Sampling, generate
from bitjax.run.trained_run import Run
from bitjax.tokenizer import render_chat


@dataclasses.dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: str          # "stop" (the model ended its turn) or "length" (max_new_tokens reached)
    tokens: int                 # completion tokens generated


class ChatModel:
    """A model answering rendered prompts `batch_size` rows at a time: `build_model(params)` decoded with a
    key/value cache, the tokenizer's boundary token before every prompt, `context` positions at most."""

    def __init__(self, build_model, params, tokenizer, *, context: int, name: str, mesh=None, batch_size: int = 64):
        self.build_model, self.params, self.tokenizer = build_model, params, tokenizer
        self.eos = tokenizer_lib.eos_id(tokenizer)
        self.context, self.name, self.mesh, self.batch_size = context, name, mesh, batch_size

    def render(self, messages: list[dict]) -> str:
        return render_chat(tokenizer_lib.CHAT_TEMPLATE, messages)

    def prompt_ids(self, prompt: str, max_new_tokens: int) -> np.ndarray:
        """The boundary token then the prompt, as every trained document starts; too long is a ConfigError."""
        ids = [self.eos] + self.tokenizer.encode(prompt, add_special_tokens=False).ids
        if len(ids) + max_new_tokens > self.context:
            raise ConfigError(f"a prompt of {len(ids)} tokens plus {max_new_tokens} new ones exceeds {self.name}'s "
                              f"context of {self.context} (model.max_seq_len); ask for fewer new tokens")
        return np.asarray(ids, np.int32)

    def complete_many(self, prompts: list[str], *, max_new_tokens: int, temperature: float, top_p: float,
                      seeds: list[int], on_batch: Callable[[int, int], None] | None = None) -> list[Completion]:
        ids = [self.prompt_ids(p, max_new_tokens) for p in prompts]
        made = generate(self.build_model, self.params, ids, max_new_tokens=max_new_tokens, stop_ids={self.eos},
                        sampling=Sampling(temperature, top_p), seeds=[s % (1 << 32) for s in seeds],
                        batch_size=self.batch_size, mesh=self.mesh, on_batch=on_batch)
        out = []
        for tokens in made:
            ended = len(tokens) > 0 and int(tokens[-1]) == self.eos
            text = self.tokenizer.decode([int(t) for t in tokens if int(t) != self.eos])
            out.append(Completion(text.strip(), "stop" if ended else "length", len(tokens)))
        return out


def run_chat_model(run: str | Path | Run, *, batch_size: int = 64) -> ChatModel:
    """The latest checkpoint of a run directory as a ChatModel, its rows split over the devices when there are
    several (a recipe's mesh on accelerators, or simulated ones)."""
    run = run if isinstance(run, Run) else Run(run)
    return ChatModel(run.model_builder(), run.params, tokenizer_lib.load(run.tokenizer_path),
                     context=run.config.model.max_seq_len, name=f"bitjax:{Path(run.dir).name}",
                     mesh=run.mesh if jax.device_count() > 1 else None, batch_size=batch_size)
