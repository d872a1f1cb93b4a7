"""What the student learns from each source, one objective per module, and how a mixed batch becomes one loss.

  table           OBJECTIVES (by name), ObjectiveName, DEFAULT_OBJECTIVE per kind of source
  cross_entropy   "ce" on text, "sft" on the completions of positive traces
  distillation    "kd": the teacher's top-k (cached or online), with the attention-relation term when asked
  redi            "redi": positive/negative trace pairs
  trace_distillation  "trace_kd": the online teacher's top-k on the completions of positive traces
  base            Objective, the outputs it needs (Needs, ModelOutputs) and the BatchView its loss reads
  batch           SourceObjectives (the run's per-source table) and batch_loss

Adding an objective: a module defining its loss and its `Objective`, one entry in table.OBJECTIVES, a test.
"""

from bitjax.losses.objectives.base import BatchView, ModelOutputs, Needs, Objective
from bitjax.losses.objectives.batch import SourceObjectives, batch_loss
from bitjax.losses.objectives.table import DEFAULT_OBJECTIVE, OBJECTIVES, ObjectiveName

__all__ = ["DEFAULT_OBJECTIVE", "OBJECTIVES", "BatchView", "ModelOutputs", "Needs", "Objective", "ObjectiveName",
           "SourceObjectives", "batch_loss"]
