"""REDI (arXiv 2505.24850) on positive/negative trace pairs ("redi").

  L_s = mean over the source's pair rows of  -log p(y_w | x) / |y_w| + alpha * log p(y_l | x) / |y_l|

with segment 1 of a row the positive completion y_w and segment 2 the negative y_l (bitjax.data.pack).
"""

from __future__ import annotations

from bitjax.losses import terms
from bitjax.losses.objectives.base import BatchView, Objective, weighted_mean


def redi(v: BatchView, is_S) -> tuple:
    redi_B, pos_B, neg_B = terms.redi_pair_rows(v.logp_BL, v.mask_BL, v.batch["segment_ids"], v.distill.redi_alpha)
    redi_S = v.row_mean_S(redi_B)
    redi_rows_B = v.onehot_BS @ is_S
    return redi_S, {"redi": weighted_mean(redi_S, is_S * v.rows_S),
                    "redi/positive_logprob": weighted_mean(pos_B, redi_rows_B),
                    "redi/negative_logprob": weighted_mean(neg_B, redi_rows_B)}


REDI = Objective("traces", "trace_pairs", redi, token_level=False, doc="REDI on positive/negative trace pairs")
