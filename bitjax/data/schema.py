"""The one schema of a training row and batch: every source, packer, cache and the trainer agree on it.

A row of L positions (every field int32 unless noted):
  inputs, targets     (L,)   next-token pairs
  segment_ids         (L,)   1, 2, ... per document piece; 0 on padding
  positions           (L,)   position inside the document piece (RoPE)
  loss_mask           (L,)   1 where the target is trained on
  source_id           ()     index of the row's data source (selects its objective)
and, when some source distils from a teacher cache (every row then carries them; zeros where unused):
  teacher_ids         (L, K)           the teacher's top-k token ids, best first
  teacher_logprobs    (L, K) float32   their log-probabilities (temperature 1)
  teacher_tail        (L,)   float32   log of the teacher's mass outside the top k
A batch stacks B rows: a leading B on every shape.
"""

from __future__ import annotations

import numpy as np

SEQUENCE_FIELDS = ("inputs", "targets", "segment_ids", "positions", "loss_mask")   # (L,) int32 each
SOURCE_FIELD = "source_id"


def teacher_fields(seq_len: int, k: int) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shape (of one row) and dtype of each teacher field."""
    return {"teacher_ids": ((seq_len, k), np.dtype(np.int32)),
            "teacher_logprobs": ((seq_len, k), np.dtype(np.float32)),
            "teacher_tail": ((seq_len,), np.dtype(np.float32))}


def row_fields(seq_len: int, teacher_k: int = 0) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shape and dtype of every field of one row (teacher fields when `teacher_k` > 0)."""
    fields = {name: ((seq_len,), np.dtype(np.int32)) for name in SEQUENCE_FIELDS}
    fields[SOURCE_FIELD] = ((), np.dtype(np.int32))
    if teacher_k:
        fields.update(teacher_fields(seq_len, teacher_k))
    return fields


def batch_fields(batch_size: int, seq_len: int, teacher_k: int = 0) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shape and dtype of every field of a batch of `batch_size` rows."""
    return {name: ((batch_size, *shape), dtype) for name, (shape, dtype) in row_fields(seq_len, teacher_k).items()}


def empty_sequence_row(seq_len: int) -> dict[str, np.ndarray]:
    """All-padding sequence fields of one row."""
    return {name: np.zeros(seq_len, np.int32) for name in SEQUENCE_FIELDS}


def empty_teacher_fields(seq_len: int, k: int) -> dict[str, np.ndarray]:
    """Zero teacher fields, for rows without a teacher in batches where some rows have one."""
    return {name: np.zeros(shape, dtype) for name, (shape, dtype) in teacher_fields(seq_len, k).items()}
