"""Decoding with a bitjax model and a key/value cache: one jitted step for every caller.

Prompts of different lengths are left-padded to a common length P, so every row's next token goes to the
same cache slot P + t at step t; padding slots are masked out and RoPE positions count from each row's
first real token. One jitted step runs the prompt (compiled for L = P) and then each new token (L = 1).
What the step returns for the next position is chosen on the device by `select(logits_BV, seeds_B, draw)`:
greedy ids (only B integers leave the device per step), ids sampled at a temperature with top-p, each row
from its own seed and the number of the token drawn (so a row's tokens depend neither on the rows decoded beside it
nor on how far its prompt was padded), or the float32 logits
(`bitjax generate` samples on the host, as its other runtimes do).

`generate` decodes any number of prompts in batches of one shape (rows and prompt length padded), so the step
compiles twice in all; with a `mesh` the rows are split over its batch axes and the parameters stay where
the mesh put them (a Run restored onto several devices, or a recipe's mesh on accelerators).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from bitjax.nn.attention import BATCH_AXES
from bitjax.nn.transformer import Transformer


def argmax_ids(logits_BV: jax.Array, seeds_B: jax.Array, draw) -> jax.Array:
    return jnp.argmax(logits_BV, axis=-1).astype(jnp.int32)


def float32_logits(logits_BV: jax.Array, seeds_B: jax.Array, draw) -> jax.Array:
    return logits_BV.astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class Sampling:
    """How the next token is chosen: greedy at temperature 0, else softmax(logits / T) within the top-p mass."""

    temperature: float = 0.0
    top_p: float = 1.0

    def __post_init__(self):
        if not self.temperature >= 0 or not 0 < self.top_p <= 1:
            raise ValueError(f"temperature {self.temperature} must be >= 0 and top_p {self.top_p} in (0, 1]")

    def select(self) -> Callable[[jax.Array, jax.Array, object], jax.Array]:
        return argmax_ids if self.temperature == 0 else _sampler(self.temperature, self.top_p)


@functools.lru_cache(maxsize=16)
def _sampler(temperature: float, top_p: float):
    """One function per setting: the jitted step is cached by its `select`, so a new closure per call would
    compile the step again for every batch."""

    def sample(logits_BV, seeds_B, draw):
        z_BV = logits_BV.astype(jnp.float32) / temperature
        if top_p < 1:   # keep the most likely tokens whose mass before them is under top_p (at least one)
            sorted_BV = jnp.sort(z_BV, axis=-1)[:, ::-1]
            before_BV = jnp.cumsum(jax.nn.softmax(sorted_BV, axis=-1), axis=-1) - jax.nn.softmax(sorted_BV, -1)
            cutoff_B1 = jnp.min(jnp.where(before_BV < top_p, sorted_BV, jnp.inf), axis=-1, keepdims=True)
            z_BV = jnp.where(z_BV >= cutoff_B1, z_BV, -jnp.inf)
        keys_B = jax.vmap(lambda s: jax.random.fold_in(jax.random.key(s), draw))(seeds_B)
        return jax.vmap(jax.random.categorical)(keys_B, z_BV).astype(jnp.int32)

    return sample


class KVDecoder:
    """B prompts decoded together for up to `max_new_tokens` positions: `prefill()`, then `step(ids_B)`.

    build_model(params) -> Transformer builds the model from its parameters (`Run.model_builder()`,
    `Trainer.model`); `select(logits_BV, seeds_B, draw)` is what each call returns, computed on the device.
    `prompt_len` pads every prompt to that length (default: the longest), `seeds_B` seed each row's sampling,
    `mesh` splits the rows over its batch axes (B must be a multiple of their size).
    """

    def __init__(self, build_model: Callable[[object], Transformer], params, prompts: list[np.ndarray], *,
                 max_new_tokens: int, select=argmax_ids, prompt_len: int | None = None,
                 seeds_B: np.ndarray | None = None, mesh=None):
        self.params = params
        self.B, self.P = len(prompts), prompt_len or max(len(p) for p in prompts)
        T = self.P + max_new_tokens
        self.pad_B = np.asarray([self.P - len(p) for p in prompts], np.int32)
        self.tokens_BP = np.zeros((self.B, self.P), np.int32)
        for b, p in enumerate(prompts):
            self.tokens_BP[b, self.pad_B[b]:] = p
        self.valid_BT = np.zeros((self.B, T), bool)
        self.valid_BT[np.arange(T)[None, :] >= self.pad_B[:, None]] = True   # padding never attends or is attended
        self.slots_T = np.arange(T)
        self.seeds_B = np.zeros(self.B, np.uint32) if seeds_B is None else np.asarray(seeds_B, np.uint32)
        self.mesh = mesh
        self.t = 0   # new tokens fed so far
        caches = build_model(params).empty_cache(self.B, T)
        self.caches = caches if mesh is None else jax.tree.map(self._rows_on_axis(1), caches)
        self._run = _jitted_step(build_model, select)

    def _rows_on_axis(self, axis: int):
        """Place an array's axis `axis` (its rows) over the mesh's batch axes, the rest whole."""
        axes = tuple(a for a in BATCH_AXES if a in self.mesh.axis_names)

        def put(x):
            if not hasattr(x, "ndim") or x.ndim <= axis:
                return x
            spec = [None] * x.ndim
            spec[axis] = axes
            return jax.device_put(x, NamedSharding(self.mesh, P(*spec)))

        return put

    def _call(self, tokens_BL, positions_BL, mask_B11LT, index):
        # `draw` numbers the token being chosen (0 after the prompt): a sampled row's key depends on it, not on
        # the cache slot, so padding a prompt to its batch's length does not change what the row samples
        args = (tokens_BL, positions_BL, mask_B11LT, self.seeds_B)
        draw = np.int32(self.t)
        if self.mesh is not None:
            args = tuple(self._rows_on_axis(0)(np.asarray(a)) for a in args)
            with jax.sharding.use_abstract_mesh(self.mesh.abstract_mesh):
                out, self.caches = self._run(self.params, *args[:3], self.caches, index, args[3], draw)
            return out
        out, self.caches = self._run(self.params, *args[:3], self.caches, index, args[3], draw)
        return out

    def prefill(self):
        """The prompt: slot i attends to the real slots j <= i. Returns `select` of the next position."""
        P = self.P
        mask_BPT = (self.slots_T[None, :P, None] >= self.slots_T[None, None, :]) & self.valid_BT[:, None, :]
        positions_BP = np.maximum(np.arange(P)[None, :] - self.pad_B[:, None], 0).astype(np.int32)
        return self._call(self.tokens_BP, positions_BP, mask_BPT[:, None, None], 0)

    def step(self, ids_B: np.ndarray):
        """Feed one new token per row (into slot P + t); returns `select` of the position after it."""
        slot = self.P + self.t
        mask_BT = self.valid_BT & (self.slots_T[None, :] <= slot)
        positions_B1 = (self.P - self.pad_B + self.t)[:, None].astype(np.int32)
        self.t += 1
        return self._call(np.asarray(ids_B, np.int32).reshape(self.B, 1), positions_B1, mask_BT[:, None, None, None],
                          slot)


@functools.lru_cache(maxsize=8)
def _jitted_step(build_model, select):
    """One jitted step per (model, selection): decoders of the same shapes share its compilations."""

    @jax.jit
    def run(params, tokens_BL, positions_BL, mask_B11LT, caches, index, seeds_B, draw):
        logits_BV, caches = build_model(params).decode(tokens_BL, positions_BL, mask_B11LT, caches, index)
        return select(logits_BV, seeds_B, draw), caches

    return run


def generate(build_model: Callable[[object], Transformer], params, prompts: list[np.ndarray], *,
             max_new_tokens: int, stop_ids: set[int], sampling: Sampling = Sampling(), seeds: list[int] | None = None,
             batch_size: int = 64, mesh=None, on_batch: Callable[[int, int], None] | None = None
             ) -> list[np.ndarray]:
    """Continuations of `prompts` (token ids), each cut after its first stop id, `batch_size` rows at a time.

    Every batch has the same shape (the last one padded with copies of a prompt, its rows dropped), so the
    step compiles once for the prompt and once for a token. `seeds[i]` seeds prompt i's sampling.
    `on_batch(rows_done, tokens_made)` reports progress.
    """
    if not prompts:
        return []
    seeds = list(seeds) if seeds is not None else [0] * len(prompts)
    if mesh is not None:   # rows split evenly over the batch axes
        split = int(np.prod([mesh.shape[a] for a in BATCH_AXES if a in mesh.axis_names]))
        batch_size = -(-batch_size // split) * split
    batch_size = min(batch_size, len(prompts)) if mesh is None else batch_size
    prompt_len = max(len(p) for p in prompts)
    select = sampling.select()
    out: list[np.ndarray] = []
    for start in range(0, len(prompts), batch_size):
        rows = list(prompts[start:start + batch_size])
        row_seeds = seeds[start:start + batch_size]
        n = len(rows)
        rows += [rows[0]] * (batch_size - n)
        row_seeds += [row_seeds[0]] * (batch_size - n)
        decoder = KVDecoder(build_model, params, rows, max_new_tokens=max_new_tokens, select=select,
                            prompt_len=prompt_len, seeds_B=np.asarray(row_seeds, np.uint32), mesh=mesh)
        made = _decode(decoder, max_new_tokens, stop_ids)[:n]
        out += made
        if on_batch is not None:
            on_batch(n, sum(len(m) for m in made))
    return out


def _decode(decoder: KVDecoder, max_new_tokens: int, stop_ids: set[int]) -> list[np.ndarray]:
    next_B = decoder.prefill()
    out = [[] for _ in range(decoder.B)]
    done = np.zeros(decoder.B, bool)
    for t in range(max_new_tokens):
        next_B = np.asarray(next_B)
        for b in np.flatnonzero(~done):
            out[b].append(int(next_B[b]))
            done[b] = int(next_B[b]) in stop_ids
        if done.all() or t == max_new_tokens - 1:
            break
        next_B = decoder.step(next_B)
    return [np.asarray(o, np.int32) for o in out]


def greedy_generate(build_model: Callable[[object], Transformer], params, prompts: list[np.ndarray], *,
                    max_new_tokens: int, stop_ids: set[int]) -> list[np.ndarray]:
    """Greedy continuations of `prompts` (lists of token ids) decoded together, each cut after its first stop id."""
    decoder = KVDecoder(build_model, params, prompts, max_new_tokens=max_new_tokens)
    return _decode(decoder, max_new_tokens, stop_ids)
