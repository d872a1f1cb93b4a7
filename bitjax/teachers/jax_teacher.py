"""The JAX teacher of `bitjax cache-teacher --backend jax`: a full-precision bitjax model on the accelerators.

    teacher = JaxTeacher("hf:DIR", cfg, k=32)        # or gguf:PATH, gguf:smollm2, bitjax:RUN_DIR
    write_cache(out, spec, examples, teacher.row_teacher(), ...)

The model is imported as `distill.online` imports it (bitjax.teachers.online: the HF and GGUF importers, or a
bitjax run), computes in the recipe's dtype with its attention kernel, and its parameters are placed by the
training partition rules (bitjax.sharding.RULES) over the recipe's mesh, across every process of a multi-host
run. One jitted forward runs a global batch of `data.batch_size` packed rows: each process contributes its own
rows (from the shards it writes), split over the batch axes, and reads its rows' results back. The documents
packed in a row are read apart: the decoder's attention masks by segment id and positions restart at each
document, so every document sees only itself, as the per-document backends do. The top-k, their
log-probabilities and the tail's log-mass are computed block by block over the sequence
(online.topk_fields), so no (B, L, V) array exists. Processes call the forward in lockstep; one whose
shards are done feeds padding rows until the others finish.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jaxtyping import Float, Int

from bitjax import sharding as sharding_lib
from bitjax.config import TrainConfig
from bitjax.data import schema
from bitjax.data.teacher_files.topk_cache_writer import RowTeacher
from bitjax.errors import ConfigError
from bitjax.nn.model_config import ModelConfig
from bitjax.paths import user_path
from bitjax.pretrained import spec as model_spec
from bitjax.run import RunPaths, checkpoint_steps
from bitjax.teachers import online

MODEL_FIELDS = ("inputs", "segment_ids", "positions")   # what the teacher's forward reads of a row


def teacher_config(spec: str) -> ModelConfig:
    """The ModelConfig the teacher's metadata describes (config.json, GGUF metadata, a run's config): no weights."""
    return model_spec.model_config(model_spec.parse(spec, "--teacher"))


def check_vocabulary(spec: str, cfg: TrainConfig) -> None:
    """The teacher's vocabulary against the student's, from the teacher's metadata alone: before any weight is
    read and before the data pipeline is built."""
    vocab = teacher_config(spec).vocab_size
    if vocab != cfg.model.vocab_size:
        raise ConfigError(f"--teacher {spec}: the teacher has a vocabulary of {vocab} tokens, the student "
                          f"(model.vocab_size) {cfg.model.vocab_size}; cached top-k ids index one vocabulary, so "
                          "train the student with the teacher's tokenizer (data.tokenizer) and vocabulary size")


def teacher_name(spec: str) -> str:
    """The name a cache records, e.g. "jax:hf:Llama-3-8B", "jax:bitjax:teacher@3000"."""
    parsed = model_spec.parse(spec, "--teacher")
    name = parsed.name
    if parsed.scheme == "bitjax":
        steps = checkpoint_steps(RunPaths(user_path(parsed.location, "--teacher")).checkpoints)
        name += f"@{steps[-1]}" if steps else ""
    return f"jax:{parsed.scheme}:{name}"


class JaxTeacher:
    """A teacher model jitted and sharded over the recipe's mesh; `row_teacher()` feeds it to the cache writer."""

    def __init__(self, spec: str, cfg: TrainConfig, k: int):
        self.mesh = sharding_lib.make_mesh(cfg.mesh)
        rows = cfg.data.batch_size
        sharding_lib.check_batch(rows, self.mesh)
        if rows % jax.process_count():
            raise ConfigError(f"data.batch_size={rows} rows per forward cannot be split over {jax.process_count()} "
                              f"processes; use a multiple of {jax.process_count()}")
        self.local_rows = rows // jax.process_count()
        self.k, self.seq_len, self.loss_chunk = k, cfg.data.seq_len, cfg.loss_chunk
        self.teacher = online.load(spec, cfg.model, self.mesh)
        self.name = teacher_name(spec)
        self.vocab_size = self.teacher.config.vocab_size
        batch_sh = sharding_lib.batch_sharding(self.mesh)
        self._forward = jax.jit(self._rows, in_shardings=(sharding_lib.tree_shardings(self.teacher.params, self.mesh),
                                                          batch_sh), out_shardings=batch_sh)

    def describe(self) -> str:
        axes = ", ".join(f"{a} {n}" for a, n in self.mesh.shape.items())
        return (f"({axes}) mesh of {self.mesh.size} devices in {jax.process_count()} process(es), "
                f"{self.local_rows * jax.process_count()} rows per forward")

    def _rows(self, params, batch: dict[str, Int[jax.Array, "B L"]]
              ) -> tuple[Int[jax.Array, "B L E"], Float[jax.Array, "B L E"], Float[jax.Array, "B L"]]:
        with jax.sharding.use_abstract_mesh(self.mesh.abstract_mesh):   # attention kernels run per device
            fields = online.topk_fields(self.teacher.model(params), batch, self.k, loss_chunk=self.loss_chunk)
        # padding (segment 0) as the per-document writer leaves it: id 0, log-prob 0, tail -inf
        pad_BL = batch["segment_ids"] == 0
        return (jnp.where(pad_BL[..., None], 0, fields["teacher_ids"]),
                jnp.where(pad_BL[..., None], 0.0, fields["teacher_logprobs"]),
                jnp.where(pad_BL, -jnp.inf, fields["teacher_tail"]))

    def topk_rows(self, examples: list[dict]) -> tuple:
        """This process's rows (at most `local_rows`, the rest padding) through one global forward; the results
        are read back when the writer reads them, so the next forward is dispatched first."""
        padding = [schema.empty_sequence_row(self.seq_len)] * (self.local_rows - len(examples))
        local = {name: np.stack([np.asarray(row[name], np.int32) for row in [*examples, *padding]])
                 for name in MODEL_FIELDS}
        out = self._forward(self.teacher.params, sharding_lib.global_batch(local, self.mesh))
        return tuple(_HostRows(a) for a in out)

    def agree_calls(self, n: int) -> int:
        """The most forward calls any process needs: every process makes that many."""
        if jax.process_count() == 1:
            return n
        return int(np.max(multihost_utils.process_allgather(np.asarray(n, np.int32))))

    def row_teacher(self) -> RowTeacher:
        return RowTeacher(self.topk_rows, self.local_rows, self.agree_calls)


class _HostRows:
    """This process's rows of a batch-sharded global array, in global order, fetched when read (np.asarray)."""

    def __init__(self, array: jax.Array):
        self.array = array

    def __array__(self, dtype=None, copy=None):
        pieces = {}
        for shard in self.array.addressable_shards:   # devices holding the same rows (tensor axis) share an index
            pieces.setdefault(shard.index[0].start or 0, shard.data)
        rows = np.concatenate([np.asarray(pieces[start]) for start in sorted(pieces)])
        return rows if dtype is None else rows.astype(dtype)
