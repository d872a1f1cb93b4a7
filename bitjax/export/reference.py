"""bitjax's own forward pass on a restored run, held-out tokens, and the agreement figures runtimes are held to.

Two reference forwards exist, and each runtime check states which it compares against:
  quantize_activations=True   the training forward (ternary weights, int8 per-token activations), what
                              transformers' autobitlinear computes; also the target of llama.cpp's TQ types,
                              which quantize activations themselves (8 bits per 256-value block, Q8_K)
  quantize_activations=False  W1.58A16: ternary weights, full-precision activations, what llama.cpp's
                              F32/F16 bitnet path computes
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from bitjax import data as data_lib
from bitjax import tokenizer as tokenizer_lib
from bitjax.export.common import ExportError
from bitjax.run import Run


def _model(run: Run, quantize_activations: bool, embedding_VD=None):
    model = run.model(quantize_activations=quantize_activations)
    if embedding_VD is not None:   # the embedding (and tied head) a file really holds, e.g. dequantized Q4_K
        model.embed_tokens.embedding.value = jnp.asarray(embedding_VD, model.embed_tokens.embedding.value.dtype)
    return model


def bitjax_logits(run: Run, tokens_L, *, quantize_activations: bool = True, embedding_VD=None) -> np.ndarray:
    """(L, V) float32 logits of one sequence; `embedding_VD` replaces the run's tied embedding and head."""
    model = _model(run, quantize_activations, embedding_VD)
    tokens_1L = jnp.asarray(np.asarray(tokens_L, np.int32)[None])
    return np.asarray(jax.jit(lambda t: model(t))(tokens_1L))[0]


def bitjax_greedy(run: Run, prompt, n_new: int, *, quantize_activations: bool = True) -> list[int]:
    """Greedy continuation; one jitted forward over a fixed-length buffer (causal, so the tail is ignored)."""
    model = _model(run, quantize_activations)
    forward = jax.jit(lambda t: model(t))
    buffer = np.zeros((1, len(prompt) + n_new), np.int32)
    buffer[0, :len(prompt)] = prompt
    for i in range(len(prompt), len(prompt) + n_new):
        logits_1LV = forward(jnp.asarray(buffer))
        buffer[0, i] = int(jnp.argmax(logits_1LV[0, i - 1]))
    return buffer[0, len(prompt):].tolist()


def heldout_tokens(run: Run, n_tokens: int) -> np.ndarray:
    """The first `n_tokens` of the run's held-out split (never trained on), tokenized as in training."""

    pipeline = data_lib.build_pipeline(run.config.data, text_only=True)
    fingerprint = tokenizer_lib.fingerprint(tokenizer_lib.load(run.tokenizer_path))
    if pipeline.tokenizer_fingerprint != fingerprint:
        raise ExportError(f"{run.tokenizer_path} differs from the tokenizer the run's data config builds now; "
                          "the held-out text cannot be tokenized as in training")
    return pipeline.heldout_tokens(n_tokens)


def _log_softmax(logits_LV: np.ndarray) -> np.ndarray:
    x = logits_LV.astype(np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def perplexity(logits_LV: np.ndarray, tokens_L: np.ndarray) -> float:
    """Next-token perplexity of `tokens_L[1:]` under `logits_LV[:-1]`."""
    logp = _log_softmax(logits_LV[:-1])
    return float(np.exp(-np.mean(logp[np.arange(len(tokens_L) - 1), tokens_L[1:]])))


# A runtime that rounds activations differently (llama.cpp's 8-bit blocks) moves logits by a few hundredths, so
# it may reorder the reference's top two where they are closer than this; a wrong code or scale moves clear
# decisions too. Agreement is also reported over the positions whose top-2 margin is at least this.
TIE_MARGIN = 0.1


def agreement(reference_LV: np.ndarray, runtime_LV: np.ndarray, tokens_L: np.ndarray) -> dict[str, float]:
    """Argmax agreement (over all positions, and over those that are no near-tie in the reference), logit
    differences and perplexities of a runtime against a reference forward."""
    diff = np.abs(reference_LV.astype(np.float64) - runtime_LV.astype(np.float64))
    ppl_ref, ppl_run = perplexity(reference_LV, tokens_L), perplexity(runtime_LV, tokens_L)
    top2_L2 = np.sort(reference_LV.astype(np.float64), axis=-1)[:, -2:]
    clear_L = top2_L2[:, 1] - top2_L2[:, 0] >= TIE_MARGIN
    same_L = reference_LV.argmax(-1) == runtime_LV.argmax(-1)
    return {
        "tokens": int(len(tokens_L)),
        "argmax_agreement": float(np.mean(same_L)),
        "clear_positions": int(clear_L.sum()),
        "argmax_agreement_clear": float(np.mean(same_L[clear_L])) if clear_L.any() else 1.0,
        "max_abs_logit_diff": float(diff.max()),
        "mean_abs_logit_diff": float(diff.mean()),
        "ppl_reference": ppl_ref,
        "ppl_runtime": ppl_run,
        "ppl_rel_diff": abs(ppl_run - ppl_ref) / ppl_ref,
    }
