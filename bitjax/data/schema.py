"""The one schema of a training row and batch: every source, packer, cache and the trainer agree on it.

A row of L positions (every field int32 unless noted):
  inputs, targets     (L,)   next-token pairs
  segment_ids         (L,)   1, 2, ... per document piece; 0 on padding
  positions           (L,)   position inside the document piece (RoPE)
  loss_mask           (L,)   1 where the target is trained on
  source_id           ()     index of the row's data source (selects its objective)
and, when some source distils from a teacher cache (every row then carries them; zeros where unused):
  teacher_ids         (L, E) uint16    the teacher's top-k token ids, best first (int32 over 65536 tokens)
  teacher_logprobs    (L, E) float16   their log-probabilities (temperature 1), as the cache stores them
  teacher_tail        (L,)   float32   log of the teacher's mass outside the top k
The teacher fields stay as narrow as the cache stores them until they are on the device (the loss widens
them there): at k = 32 a position carries 132 bytes instead of 260 through the host pipeline and transfer.
A batch stacks B rows: a leading B on every shape.
"""

from __future__ import annotations

import numpy as np

SEQUENCE_FIELDS = ("inputs", "targets", "segment_ids", "positions", "loss_mask")   # (L,) int32 each
SOURCE_FIELD = "source_id"


def teacher_id_dtype(vocab_size: int) -> np.dtype:
    """uint16 while every id fits, else int32: the one rule for caches and batches."""
    return np.dtype(np.uint16 if vocab_size <= np.iinfo(np.uint16).max + 1 else np.int32)


def teacher_fields(seq_len: int, k: int, vocab_size: int, logprob_dtype: str = "float16"
                   ) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shape (of one row) and dtype of each teacher field."""
    return {"teacher_ids": ((seq_len, k), teacher_id_dtype(vocab_size)),
            "teacher_logprobs": ((seq_len, k), np.dtype(logprob_dtype)),
            "teacher_tail": ((seq_len,), np.dtype(np.float32))}


def row_fields(seq_len: int, teacher_k: int = 0, vocab_size: int = 0
               ) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shape and dtype of every field of one row (teacher fields when `teacher_k` > 0)."""
    fields = {name: ((seq_len,), np.dtype(np.int32)) for name in SEQUENCE_FIELDS}
    fields[SOURCE_FIELD] = ((), np.dtype(np.int32))
    if teacher_k:
        fields.update(teacher_fields(seq_len, teacher_k, vocab_size))
    return fields


def batch_fields(batch_size: int, seq_len: int, teacher_k: int = 0, vocab_size: int = 0
                 ) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shape and dtype of every field of a batch of `batch_size` rows."""
    return {name: ((batch_size, *shape), dtype)
            for name, (shape, dtype) in row_fields(seq_len, teacher_k, vocab_size).items()}


def empty_sequence_row(seq_len: int) -> dict[str, np.ndarray]:
    """All-padding sequence fields of one row."""
    return {name: np.zeros(seq_len, np.int32) for name in SEQUENCE_FIELDS}


def empty_teacher_fields(seq_len: int, k: int, vocab_size: int, logprob_dtype: str = "float16"
                         ) -> dict[str, np.ndarray]:
    """Zero teacher fields, for rows without a teacher in batches where some rows have one."""
    fields = teacher_fields(seq_len, k, vocab_size, logprob_dtype)
    return {name: np.zeros(shape, dtype) for name, (shape, dtype) in fields.items()}
