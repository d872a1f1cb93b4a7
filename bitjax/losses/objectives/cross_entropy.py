"""Next-token cross-entropy over a source's trained tokens: plain text ("ce") and trace completions ("sft")."""

from __future__ import annotations

from bitjax.losses.objectives.base import BatchView, Objective


def cross_entropy(v: BatchView, is_S) -> tuple:
    """L_s = mean of -log p(target) over the source's trained tokens (prompts are masked)."""
    return v.token_mean_S(-v.logp_BL), {}


CE = Objective("text", "packed_text", cross_entropy, doc="next-token cross-entropy")
SFT = Objective("traces", "packed_completions", cross_entropy, doc="CE on the completions of positive traces")
