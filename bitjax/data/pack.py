"""Documents to packed training sequences with Grain's packers.

A document of n tokens becomes the pair inputs = [BOS] + ids, targets = ids + [EOS] (n + 1 each, BOS = EOS =
the tokenizer's end-of-text token), so no target ever belongs to another document. Packing then cuts and
joins these pairs into sequences of exactly L and emits, per sequence (all int32, shape (L,)):
  inputs, targets   next-token pairs
  segment_ids       1, 2, ... per document piece in the sequence; 0 on padding
  positions         position inside the document piece (RoPE), restarting at each piece
  loss_mask         1 where the target is trained on; 0 on padding and on prompt tokens
Two packers (data.packing):
  concat_then_split  Grain's ConcatThenSplitIterDataset: no padding; a document that does not fit is split
                     and continues in the next sequence (nothing is dropped).
  first_fit          Grain's FirstFitPackIterDataset: documents are not cut unless longer than L, in which
                     case they are first split into L-token pieces (a FlatMap), so nothing is dropped either.
"""

from __future__ import annotations

import grain
import numpy as np

from bitjax.data import schema
from bitjax.data.sources.examples import FEATURES, DocumentExamples
from bitjax.data.sources.token_shard import TokenShard


class PairExamples:
    """Grain random-access source: REDI pair i as one row of length L, already in the batch schema.

    Segment 1 is `[BOS] prompt positive`, segment 2 `[BOS] prompt negative`, then padding (segment 0);
    positions restart per segment and `loss_mask` marks the completion tokens. Pairs that do not fit in
    L are left out (`total` counts all, `len` the kept ones).
    """

    def __init__(self, positives: TokenShard, negatives: TokenShard, boundary_id: int, seq_len: int):
        self.positives = DocumentExamples(positives, boundary_id)
        self.negatives = DocumentExamples(negatives, boundary_id)
        self.seq_len = seq_len
        sizes = np.diff(positives.offsets) + np.diff(negatives.offsets) + 2
        self.total, self.shortest = len(sizes), int(sizes.min())
        self._kept = np.flatnonzero(sizes <= seq_len)

    def __len__(self) -> int:
        return len(self._kept)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        pair = int(self._kept[index])
        row = schema.empty_sequence_row(self.seq_len)
        start = 0
        for segment, docs in ((1, self.positives), (2, self.negatives)):
            doc = docs[pair]
            n = len(doc["inputs"])
            for k in FEATURES:
                row[k][start:start + n] = doc[k]
            row["segment_ids"][start:start + n] = segment
            row["positions"][start:start + n] = np.arange(n)
            start += n
        return row

    def __repr__(self) -> str:
        return f"PairExamples(n={len(self)}, seq_len={self.seq_len})"


class SplitLongDocuments(grain.experimental.FlatMapTransform):
    """Cut a document pair longer than L into L-token pieces, so first-fit packing never truncates."""

    def __init__(self, seq_len: int, max_fan_out: int):
        self.seq_len, self.max_fan_out = seq_len, max_fan_out

    def flat_map(self, element):
        n = len(element["inputs"])
        return [{k: v[i:i + self.seq_len] for k, v in element.items()} for i in range(0, n, self.seq_len)]


def _to_schema(packed: dict) -> dict[str, np.ndarray]:
    segment_ids = packed["inputs_segment_ids"].astype(np.int32)
    return {"inputs": packed["inputs"], "targets": packed["targets"], "segment_ids": segment_ids,
            "positions": packed["inputs_positions"].astype(np.int32),
            "loss_mask": packed["loss_mask"] * (segment_ids > 0).astype(np.int32)}


def pack(docs: grain.IterDataset, seq_len: int, packing: str, *, max_doc_tokens: int, seed: int = 0,
         num_packing_bins: int = 16) -> grain.IterDataset:
    """Pack a stream of document pairs into sequences of `seq_len` in the batch schema."""
    lengths = {k: seq_len for k in FEATURES}
    if packing == "concat_then_split":
        packed = grain.experimental.ConcatThenSplitIterDataset(docs, length_struct=lengths)
    elif packing == "first_fit":
        fan_out = max(1, -(-(max_doc_tokens + 1) // seq_len))
        pieces = grain.experimental.FlatMapIterDataset(docs, SplitLongDocuments(seq_len, fan_out))
        packed = grain.experimental.FirstFitPackIterDataset(
            pieces, length_struct=lengths, num_packing_bins=num_packing_bins, seed=seed, shuffle_bins=True)
    else:
        raise ValueError(f"data.packing={packing!r}: use concat_then_split or first_fit")
    return packed.map(_to_schema)
