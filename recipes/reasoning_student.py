"""The ternary reasoning student, one recipe for every arm ($BITJAX_REASONING_ARM, default sft):

  direct  CE on question + final answer only, no steps (train_direct.jsonl)
  sft     SFT on the teacher's positive traces (traces.jsonl)
  redi    SFT + REDI on positive/negative pairs of the same traces
  kd      redi + KD on the positive traces' completions from the teacher's top-k (the teacher runs in the step)

BitLinear everywhere, SiLU-gated, widths multiples of 256 (GGUF TQ2_0 without padding), 2.6x fewer parameters
than recipes/reasoning_teacher.py, whose data directory, task and tokenizer it shares (the teacher run's
tokenizer.json: the same ids for KD and the same prompts).
"""

import dataclasses
import os
from pathlib import Path

from bitjax.config import CheckpointConfig, DistillConfig, OptimConfig, SourceConfig, TrainConfig, load_recipe

TEACHER_RECIPE = Path(__file__).resolve().with_name("reasoning_teacher.py")
ARMS = ("direct", "sft", "redi", "kd")


def sources(arm: str, worked: SourceConfig) -> tuple[SourceConfig, ...]:
    data = Path(worked.uri.partition(":")[2]).parent
    traces = f"traces:{data / 'traces.jsonl'}"
    if arm == "direct":
        return (dataclasses.replace(worked, name="direct", uri=f"jsonl:{data / 'train_direct.jsonl'}"),)
    if arm == "sft":
        return (SourceConfig("sft", traces, objective="sft"),)
    if arm == "redi":
        return (SourceConfig("sft", traces, weight=0.5, objective="sft"),
                SourceConfig("redi", traces, weight=0.5, objective="redi"))
    if arm == "kd":
        return (SourceConfig("sft", traces, weight=0.25, objective="sft"),
                SourceConfig("redi", traces, weight=0.25, objective="redi"),
                SourceConfig("kd", traces, weight=0.5, objective="trace_kd"))
    raise ValueError(f"BITJAX_REASONING_ARM={arm!r}: use one of {', '.join(ARMS)}")


def get_config() -> TrainConfig:
    arm = os.environ.get("BITJAX_REASONING_ARM", "sft")
    teacher = load_recipe(TEACHER_RECIPE)
    teacher_run = Path(teacher.data.sources[0].uri.partition(":")[2]).parent.parent / "teacher"
    steps = 600
    return dataclasses.replace(
        teacher,
        name=f"reasoning_student_{arm}",
        model=dataclasses.replace(teacher.model, n_layers=2, d_ff=512, quant="ternary", int8_matmul=True),
        data=dataclasses.replace(teacher.data, sources=sources(arm, teacher.data.sources[0]),
                                 tokenizer=str(teacher_run / "tokenizer.json")),
        distill=DistillConfig(teacher=f"bitjax:{teacher_run}", online=arm == "kd", kd_weight=0.9, redi_alpha=0.8),
        optim=OptimConfig(peak_lr=3e-3, stage2_peak_lr=1.5e-3, warmup_steps=50),
        checkpoint=CheckpointConfig(every=steps),
        steps=steps,
        eval_every=200,
    )
