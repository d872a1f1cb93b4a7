"""Decoding with a bitjax model and a key/value cache: one jitted step for every caller.

Prompts of different lengths are left-padded to a common length P, so every row's next token goes to the
same cache slot P + t at step t; padding slots are masked out and RoPE positions count from each row's
first real token. One jitted step runs the prompt (compiled for L = P) and then each new token (L = 1).
What the step returns for the next position is chosen on the device by `select` (greedy: the argmax ids,
so only B integers leave the device per step; `bitjax generate` takes the float32 logits and samples on the
host, as its other runtimes do).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from bitjax.nn.transformer import Transformer


def argmax_ids(logits_BV: jax.Array) -> jax.Array:
    return jnp.argmax(logits_BV, axis=-1).astype(jnp.int32)


def float32_logits(logits_BV: jax.Array) -> jax.Array:
    return logits_BV.astype(jnp.float32)


class KVDecoder:
    """B prompts decoded together for up to `max_new_tokens` positions: `prefill()`, then `step(ids_B)`.

    build_model(params) -> Transformer builds the model from its parameters (`Run.model_builder()`,
    `Trainer.model`); `select(logits_BV)` is what each call returns, computed on the device. `prompt_length`
    pads the prompts to at least that many positions, so that callers decoding many batches of different
    prompt lengths reuse a few compiled shapes.
    """

    def __init__(self, build_model: Callable[[object], Transformer], params, prompts: list[np.ndarray], *,
                 max_new_tokens: int, select: Callable[[jax.Array], jax.Array] = argmax_ids, prompt_length: int = 0):
        self.params = params
        self.B, self.P = len(prompts), max(prompt_length, *(len(p) for p in prompts))
        T = self.P + max_new_tokens
        self.pad_B = np.asarray([self.P - len(p) for p in prompts], np.int32)
        self.tokens_BP = np.zeros((self.B, self.P), np.int32)
        for b, p in enumerate(prompts):
            self.tokens_BP[b, self.pad_B[b]:] = p
        self.valid_BT = np.zeros((self.B, T), bool)
        self.valid_BT[np.arange(T)[None, :] >= self.pad_B[:, None]] = True   # padding never attends or is attended
        self.slots_T = np.arange(T)
        self.caches = build_model(params).empty_cache(self.B, T)
        self.t = 0   # new tokens fed so far

        @jax.jit
        def run(params, tokens_BL, positions_BL, mask_B11LT, caches, index):
            logits_BV, caches = build_model(params).decode(tokens_BL, positions_BL, mask_B11LT, caches, index)
            return select(logits_BV), caches

        self._run = run

    def prefill(self):
        """The prompt: slot i attends to the real slots j <= i. Returns `select` of the next position."""
        P = self.P
        mask_BPT = (self.slots_T[None, :P, None] >= self.slots_T[None, None, :]) & self.valid_BT[:, None, :]
        positions_BP = np.maximum(np.arange(P)[None, :] - self.pad_B[:, None], 0).astype(np.int32)
        out, self.caches = self._run(self.params, self.tokens_BP, positions_BP, mask_BPT[:, None, None],
                                     self.caches, 0)
        return out

    def step(self, ids_B: np.ndarray):
        """Feed one new token per row (into slot P + t); returns `select` of the position after it."""
        slot = self.P + self.t
        mask_BT = self.valid_BT & (self.slots_T[None, :] <= slot)
        positions_B1 = (self.P - self.pad_B + self.t)[:, None].astype(np.int32)
        out, self.caches = self._run(self.params, np.asarray(ids_B, np.int32).reshape(self.B, 1), positions_B1,
                                     mask_BT[:, None, None, None], self.caches, slot)
        self.t += 1
        return out


def greedy_generate(build_model: Callable[[object], Transformer], params, prompts: list[np.ndarray], *,
                    max_new_tokens: int, stop_ids: set[int]) -> list[np.ndarray]:
    """Greedy continuations of `prompts` (lists of token ids), each cut after its first stop id."""
    decoder = KVDecoder(build_model, params, prompts, max_new_tokens=max_new_tokens)
    next_B = decoder.prefill()
    out = [[] for _ in prompts]
    done = np.zeros(len(prompts), bool)
    for t in range(max_new_tokens):
        next_B = np.asarray(next_B)
        for b in np.flatnonzero(~done):
            out[b].append(int(next_B[b]))
            done[b] = int(next_B[b]) in stop_ids
        if done.all() or t == max_new_tokens - 1:
            break
        next_B = decoder.step(next_B)
    return [np.asarray(o, np.int32) for o in out]
