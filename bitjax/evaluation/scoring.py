"""Many token sequences scored or continued by a trained run, batched on the devices present.

    scorer = RunScorer(Run("runs/tiny"), batch_size=16)
    scorer.continuation_scores([(context_ids, continuation_ids), ...])   # [(log p(continuation), greedy?), ...]
    scorer.greedy_continuations([prompt_ids, ...], max_new_tokens=64, stop_ids={eos}, finished=fn)

The model is the run's, fully quantized as exported (`Run.model_builder()`). A scored sequence is the context
and continuation joined and cut from the left to the model's context; the log-probabilities of the
continuation's tokens come from one jitted forward over right-padded rows (padding is its own segment, so no
real token attends to it), computed block by block over the sequence in float32 as `bitjax eval` computes
them (`bitjax.losses.chunked_head`'s blocks): only (B, L) numbers leave the devices. Continuations are greedy,
from bitjax's key/value-cache decoder (`bitjax.nn.decode`), the decoder of `bitjax generate`.

Batches keep a few shapes, so few compiles: rows are padded to `batch_size`, which is a multiple of the
devices the batch is split over, and lengths to a power of two (at least MIN_LENGTH, at most the context).
Requests are sorted longest first, so a batch's rows have similar lengths.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from bitjax import sharding as sharding_lib
from bitjax.errors import ConfigError
from bitjax.losses.chunked_head import chunk_length
from bitjax.nn.decode import KVDecoder
from bitjax.nn.quant import at_least_f32
from bitjax.run import Run

MIN_LENGTH = 64   # the shortest padded length: shorter requests share one compiled shape


class RunScorer:
    """A run's model as a scorer of continuations and a greedy decoder, `batch_size` rows at a time."""

    def __init__(self, run: Run, *, batch_size: int = 16, max_length: int | None = None):
        if batch_size < 1:
            raise ConfigError(f"batch_size={batch_size}: score at least one row at a time")
        self.run = run
        self.max_length = max_length or run.config.model.max_seq_len
        if not 1 < self.max_length <= run.config.model.max_seq_len:
            raise ConfigError(f"max_length={self.max_length}: use 2 to the model's context, "
                              f"{run.config.model.max_seq_len} tokens (model.max_seq_len)")
        divisor = sharding_lib.batch_divisor(run.mesh)
        self.batch_size = -(-batch_size // divisor) * divisor   # rows split evenly over the batch axes
        self._batch_sharding = sharding_lib.batch_sharding(run.mesh)
        self._build = run.model_builder()
        build, loss_chunk = self._build, run.config.loss_chunk

        @jax.jit
        def token_scores(params, inputs_BL, targets_BL, segment_ids_BL):
            model = build(params)
            x_BLD = model.hidden_states(inputs_BL, segment_ids_BL)
            return target_logprobs_and_greedy(x_BLD, model.head_matrix_VD(), targets_BL, loss_chunk)

        self._token_scores = token_scores

    def padded_length(self, n: int) -> int:
        return min(max(MIN_LENGTH, 1 << (max(n, 1) - 1).bit_length()), self.max_length)

    def continuation_scores(self, requests: Sequence[tuple[Sequence[int], Sequence[int]]]
                            ) -> list[tuple[float, bool]]:
        """For each (context ids, continuation ids): the summed log-probability of the continuation after the
        context, and whether greedy decoding would produce exactly the continuation."""
        rows = []
        for context, continuation in requests:
            if not context or not continuation:
                raise ConfigError("a scored request needs at least one context and one continuation token")
            if len(continuation) > self.max_length:
                raise ConfigError(f"a continuation of {len(continuation)} tokens exceeds the model's context of "
                                  f"{self.max_length} tokens")
            tokens = (list(context) + list(continuation))[-(self.max_length + 1):]
            rows.append((np.asarray(tokens, np.int32), len(continuation)))
        results: list[tuple[float, bool]] = [(0.0, False)] * len(rows)
        order = sorted(range(len(rows)), key=lambda i: -len(rows[i][0]))
        for start in range(0, len(order), self.batch_size):
            batch = order[start:start + self.batch_size]
            L = self.padded_length(max(len(rows[i][0]) - 1 for i in batch))
            inputs_BL, targets_BL, segment_ids_BL = (np.zeros((self.batch_size, L), np.int32) for _ in range(3))
            for b, i in enumerate(batch):
                tokens = rows[i][0]
                inputs_BL[b, :len(tokens) - 1], targets_BL[b, :len(tokens) - 1] = tokens[:-1], tokens[1:]
                segment_ids_BL[b, :len(tokens) - 1] = 1     # padding: segment 0, attended by no real token
            placed = jax.device_put((inputs_BL, targets_BL, segment_ids_BL), self._batch_sharding)
            logp_BL, greedy_BL = jax.device_get(self._token_scores(self.run.params, *placed))
            for b, i in enumerate(batch):
                tokens, n = rows[i]
                end = len(tokens) - 1
                results[i] = (float(np.sum(logp_BL[b, end - n:end], dtype=np.float64)),
                              bool(np.all(greedy_BL[b, end - n:end])))
        return results

    def greedy_continuations(self, prompts: Sequence[Sequence[int]], *, max_new_tokens: int, stop_ids: set[int],
                             finished: Callable[[list[int]], bool] = lambda ids: False) -> list[list[int]]:
        """Greedy continuations of `prompts`, each ending before its first stop id, after `max_new_tokens`, or
        once `finished(continuation so far)` holds. Prompts are cut from the left to leave room for the new
        tokens in the model's context."""
        room = self.max_length - max_new_tokens
        if room < 1:
            raise ConfigError(f"{max_new_tokens} new tokens leave no room for a prompt in the model's context of "
                              f"{self.max_length} tokens; ask for fewer")
        cut = [np.asarray(list(p)[-room:], np.int32) for p in prompts]
        if any(len(p) == 0 for p in cut):
            raise ConfigError("a prompt to continue is empty; give at least one token")
        results: list[list[int]] = [[] for _ in cut]
        order = sorted(range(len(cut)), key=lambda i: -len(cut[i]))
        for start in range(0, len(order), self.batch_size):
            batch = order[start:start + self.batch_size]
            rows = [cut[i] for i in batch] + [cut[batch[-1]]] * (self.batch_size - len(batch))   # fixed B
            P = min(self.padded_length(max(len(r) for r in rows)), room)
            decoder = KVDecoder(self._build, self.run.params, rows, max_new_tokens=max_new_tokens, prompt_len=P)
            out = [[] for _ in batch]
            done = np.zeros(len(batch), bool)
            next_B = decoder.prefill()
            for t in range(max_new_tokens):
                next_B = np.asarray(next_B)
                for b in np.flatnonzero(~done):
                    token = int(next_B[b])
                    if token in stop_ids:
                        done[b] = True
                        continue
                    out[b].append(token)
                    done[b] = finished(out[b])
                if done.all() or t == max_new_tokens - 1:
                    break
                next_B = decoder.step(next_B)
            for b, i in enumerate(batch):
                results[i] = out[b]
        return results


def target_logprobs_and_greedy(x_BLD: jax.Array, head_VD: jax.Array, targets_BL: jax.Array, loss_chunk: int
                               ) -> tuple[jax.Array, jax.Array]:
    """log p(target) (B, L) float32 and whether the target is the argmax (B, L), from the final hidden states and
    the head matrix, `chunk_length(L, loss_chunk)` positions at a time: no (B, L, V) array."""
    B, L, _ = x_BLD.shape
    C = chunk_length(L, loss_chunk)

    def blocks(a):   # (B, L, ...) -> (L / C, B, C, ...)
        return jnp.swapaxes(a.reshape((B, L // C, C) + a.shape[2:]), 0, 1)

    def block(args):
        x_BCD, targets_BC = args
        z_BCV = jnp.einsum("bcd,vd->bcv", x_BCD, head_VD, preferred_element_type=at_least_f32(x_BCD.dtype))
        z_target_BC = jnp.take_along_axis(z_BCV, targets_BC[..., None], axis=-1)[..., 0]
        logp_BC = z_target_BC - jax.nn.logsumexp(z_BCV, axis=-1)
        return logp_BC, jnp.argmax(z_BCV, axis=-1) == targets_BC

    logp_JBC, greedy_JBC = jax.lax.map(block, (blocks(x_BLD), blocks(targets_BL)))
    return jnp.swapaxes(logp_JBC, 0, 1).reshape(B, L), jnp.swapaxes(greedy_JBC, 0, 1).reshape(B, L)
