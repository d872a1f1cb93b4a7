"""Distillation from the teacher's top-k ("kd"), with BitDistill's attention-relation term when asked for.

  L_s = w * KD_s + (1 - w) * CE_s  (+ distill.relation_weight * REL_s)

KD_s is the mean over the source's trained tokens of the divergence from the teacher's top-k (distill.kind,
bitjax.losses.terms), w = distill.kd_weight ramped over distill.kd_warmup_steps; REL_s the mean
attention-relation loss (bitjax.losses.relation) of one block against the online teacher's.
"""

from __future__ import annotations

from bitjax.losses import relation, terms
from bitjax.losses.objectives.base import BatchView, Objective, weighted_mean


def distillation(v: BatchView, is_S) -> tuple:
    d = v.distill
    kd_S = v.token_mean_S(v.outputs.kd_BL)
    w = terms.kd_weight(v.step, d.kd_weight, d.kd_warmup_steps)
    loss_S = w * kd_S + (1.0 - w) * v.token_mean_S(-v.logp_BL)
    metrics = {"kd": weighted_mean(kd_S, is_S * v.tokens_S), "kd_weight": w}
    if v.outputs.teacher_attention is not None:
        relation_BL = relation.relation_kl_per_token(v.outputs.student_attention, v.outputs.teacher_attention,
                                                     v.batch["segment_ids"], d.relation_heads)
        relation_S = v.token_mean_S(relation_BL)
        loss_S = loss_S + d.relation_weight * relation_S
        metrics["relation"] = weighted_mean(relation_S, is_S * v.tokens_S)
    return loss_S, metrics


def relation_block(distill) -> int | None:
    """The block whose q/k/v the relation term compares: only with an online teacher and a positive weight."""
    return distill.relation_layer if distill.relation_weight > 0 and distill.online else None


KD = Objective("text", "teacher_cache", distillation, teacher=True, attention=relation_block,
               doc="distillation from the teacher's top-k (cached, or online), mixed with CE by distill.kd_weight")
