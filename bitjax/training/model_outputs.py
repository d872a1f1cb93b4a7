"""The forward passes of one train step, computing exactly the outputs the run's objectives need.

The objectives declare what they read (bitjax.losses.objectives.Needs); this module runs the models for it:
the online teacher's forward when there is one (its top-k fields, as a cache would hold them, and one
block's q/k/v when an objective compares attention), the student's forward (its final hidden states, and
that block's q/k/v), and the chunked head (log p(target) and, when asked for, the KD divergence against the
teacher's top-k, with no (B, L, V) array). Nothing here knows any one objective.
"""

from __future__ import annotations

from bitjax.losses import chunked_head
from bitjax.losses.objectives import ModelOutputs, Needs
from bitjax.nn.transformer import Transformer
from bitjax.teachers import online


def compute(student: Transformer, teacher: Transformer | None, batch: dict, needs: Needs, distill, *,
            loss_chunk: int, mesh=None) -> tuple[ModelOutputs, dict]:
    """The model outputs `needs` names, and the batch with the online teacher's top-k fields added.

    `teacher`: the online teacher's model, or None (a cache's fields are then in the batch already, and no
    attention output of a teacher exists: a trainer built without its teacher, as fit-check's, compiles the
    step a cache would feed).
    """
    layer = needs.attention_layer if teacher is not None else None
    teacher_attention = None
    if teacher is not None and (needs.teacher_topk or layer is not None):
        fields, teacher_attention = online.forward(teacher, batch, distill.k, loss_chunk=loss_chunk,
                                                   relation_layer=layer)
        batch = {**batch, **fields}
    x_BLD, student_attention = student.hidden_states_and_inputs(batch["inputs"], batch["segment_ids"],
                                                                batch["positions"], layer)
    kd_distill = distill if needs.teacher_topk else None
    logp_BL, kd_BL = chunked_head.token_quantities(
        x_BLD, student.head_matrix_VD(), batch["targets"], chunked_head.teacher_fields(batch, kd_distill),
        kd_distill, loss_chunk=loss_chunk, mesh=mesh)
    return ModelOutputs(logp_BL, kd_BL, student_attention, teacher_attention), batch
