"""OBJECTIVES: the one table of objectives, by the name a recipe gives (SourceConfig.objective).

The config validates against it, the data pipeline builds each source's rows by its `rows`, the step
computes the outputs its `needs` name, and the batch loss calls its `loss`.
"""

from __future__ import annotations

from typing import Literal

from bitjax.losses.objectives.base import Objective
from bitjax.losses.objectives.cross_entropy import CE, SFT
from bitjax.losses.objectives.distillation import KD
from bitjax.losses.objectives.redi import REDI
from bitjax.losses.objectives.trace_distillation import TRACE_KD

OBJECTIVES: dict[str, Objective] = {
    "ce": CE,
    "kd": KD,
    "sft": SFT,
    "redi": REDI,
    "trace_kd": TRACE_KD,
}
ObjectiveName = Literal[("",) + tuple(OBJECTIVES)]
DEFAULT_OBJECTIVE = {"text": "ce", "traces": "sft"}   # by the kind of source, when a source names none
