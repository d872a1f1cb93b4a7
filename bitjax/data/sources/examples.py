"""A tokenized document as a next-token example: the pair every packer and sampler starts from.

A document of n tokens becomes inputs = [BOS] + ids, targets = ids + [EOS] (n + 1 each, BOS = EOS = the
tokenizer's end-of-text token), with loss_mask 0 on its prompt tokens (bitjax.data.pack packs these pairs).
"""

from __future__ import annotations

import numpy as np

from bitjax.data.sources.token_shard import TokenShard

FEATURES = ("inputs", "targets", "loss_mask")


class DocumentExamples:
    """Grain random-access source: document i of a token shard as an (inputs, targets, loss_mask) pair."""

    def __init__(self, shard: TokenShard, boundary_id: int):
        self.shard, self.boundary_id = shard, np.int32(boundary_id)

    def __len__(self) -> int:
        return len(self.shard)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        ids, prompt_len = self.shard.document(int(index))
        n = len(ids)
        inputs = np.empty(n + 1, np.int32)
        inputs[0] = self.boundary_id
        inputs[1:] = ids
        targets = np.empty(n + 1, np.int32)
        targets[:n] = ids
        targets[n] = self.boundary_id
        loss_mask = np.ones(n + 1, np.int32)
        loss_mask[:prompt_len] = 0
        return {"inputs": inputs, "targets": targets, "loss_mask": loss_mask}

    def __repr__(self) -> str:  # Grain logs sources by repr; keep it short and stable
        return f"DocumentExamples(source={self.shard.source!r}, n={len(self)})"
