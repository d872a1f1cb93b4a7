"""Distillation on the completions of positive traces ("trace_kd"): the teacher's top-k at every completion token.

  L_s = w * KD_s + (1 - w) * CE_s     over the source's completion tokens (prompts are masked)

the same mix as "kd" on text (bitjax.losses.objectives.distillation), on the rows "sft" trains on: the student
learns the teacher's whole next-token distribution along its verified reasoning, not only the sampled token.
The top-k comes from an online teacher (distill.online): the step computes it for every row.
"""

from __future__ import annotations

from bitjax.losses.objectives.base import Objective
from bitjax.losses.objectives.distillation import distillation

TRACE_KD = Objective("traces", "packed_completions", distillation, teacher=True, cached_teacher=False,
                     doc="distillation from the online teacher's top-k on the completions of positive traces")
