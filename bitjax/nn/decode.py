"""Greedy decoding with a bitjax model and a key/value cache, for task evaluation.

Prompts of different lengths are left-padded to a common length P, so every row's next token goes to the
same cache slot P + t at step t; padding slots are masked out and RoPE positions count from each row's
first real token. One jitted step runs the prompt (compiled for L = P) and then each new token (L = 1).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from bitjax.nn.transformer import Transformer


def greedy_generate(build_model: Callable[[object], Transformer], params, prompts: list[np.ndarray], *,
                    max_new_tokens: int, stop_ids: set[int]) -> list[np.ndarray]:
    """Greedy continuations of `prompts` (lists of token ids), each cut after its first stop id.

    build_model(params) -> Transformer builds the model from its parameters (`Run.model_builder()`,
    `Trainer.model`).
    """
    cache_fn = build_model(params).empty_cache
    B, P = len(prompts), max(len(p) for p in prompts)
    T = P + max_new_tokens
    pad_B = np.asarray([P - len(p) for p in prompts], np.int32)
    tokens_BP = np.zeros((B, P), np.int32)
    for b, p in enumerate(prompts):
        tokens_BP[b, pad_B[b]:] = p
    valid_BT = np.zeros((B, T), bool)
    valid_BT[np.arange(T)[None, :] >= pad_B[:, None]] = True    # padding slots never attend or get attended
    slots_T = np.arange(T)

    @jax.jit
    def step(params, tokens_BL, positions_BL, mask_B11LT, caches, index):
        logits_BV, caches = build_model(params).decode(tokens_BL, positions_BL, mask_B11LT, caches, index)
        return jnp.argmax(logits_BV, axis=-1).astype(jnp.int32), caches

    # the prompt: slot i attends to real slots j <= i
    mask = (slots_T[None, :P, None] >= slots_T[None, None, :]) & valid_BT[:, None, :]
    positions_BP = np.maximum(np.arange(P)[None, :] - pad_B[:, None], 0).astype(np.int32)
    next_B, caches = step(params, tokens_BP, positions_BP, mask[:, None, None], cache_fn(B, T), 0)
    out = [[] for _ in range(B)]
    done = np.zeros(B, bool)
    for t in range(max_new_tokens):
        next_B = np.asarray(next_B)
        for b in np.flatnonzero(~done):
            out[b].append(int(next_B[b]))
            done[b] = int(next_B[b]) in stop_ids
        if done.all() or t == max_new_tokens - 1:
            break
        mask = valid_BT & (slots_T[None, :] <= P + t)
        positions_B1 = (P - pad_B + t)[:, None].astype(np.int32)
        next_B, caches = step(params, next_B[:, None], positions_B1, mask[:, None, None, None], caches, P + t)
    return [np.asarray(o, np.int32) for o in out]
