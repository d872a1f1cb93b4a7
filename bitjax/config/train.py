"""Frozen, typed configuration of a run: TrainConfig and its sections, each validated at construction.

A recipe is a Python file whose `get_config()` returns a `TrainConfig`; vary it with
`dataclasses.replace` in the recipe or with `--set` on the command line (bitjax.config.recipes). The data
sections (SourceConfig, DataConfig) are bitjax.config.data.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from bitjax.config._checks import finite, positive
from bitjax.config.data import DataConfig
from bitjax.errors import ConfigError
from bitjax.losses import relation as relation_loss
from bitjax.losses.terms import Divergence, TailMode
from bitjax.nn.model_config import ModelConfig


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """AdamW with BitNet b1.58 2B4T's two-stage learning-rate and weight-decay schedules."""

    peak_lr: float = 1.5e-3           # stage-1 peak (ternary models like high rates)
    stage2_peak_lr: float = 1e-3      # stage-2 restarts at this lower peak
    end_lr_ratio: float = 0.1         # each stage's cosine ends at ratio * its peak
    warmup_steps: int = 100
    two_stage: bool = True            # False: one warmup-cosine stage, constant weight decay
    stage_split: float = 0.5          # fraction of steps spent in stage 1
    weight_decay: float = 0.1         # stage-1 peak; stage 2 uses 0
    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-8
    clip_norm: float = 1.0

    def __post_init__(self):
        finite(self, "peak_lr", "stage2_peak_lr", "end_lr_ratio", "stage_split", "weight_decay", "b1", "b2", "eps",
                "clip_norm")
        if not 0.0 < self.stage_split < 1.0:
            raise ConfigError(f"optim.stage_split={self.stage_split} must lie in (0, 1)")
        positive(self, "peak_lr", "stage2_peak_lr", "eps", "clip_norm")
        if self.warmup_steps < 0:
            raise ConfigError(f"optim.warmup_steps={self.warmup_steps} must be >= 0")
        if self.weight_decay < 0 or self.end_lr_ratio < 0:
            raise ConfigError(f"optim.weight_decay={self.weight_decay} and optim.end_lr_ratio={self.end_lr_ratio} "
                              "must be >= 0")
        for name in ("b1", "b2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"optim.{name}={getattr(self, name)} must lie in [0, 1)")


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    every: int = 200                  # steps between Orbax checkpoints (also saved at the end and on SIGTERM)
    keep: int = 3                     # most recent checkpoints kept
    async_save: bool = True           # write in the background while training continues

    def __post_init__(self):
        positive(self, "every", "keep")


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Device mesh (see bitjax/sharding.py) and multi-host start-up. One axis may be -1: all devices left."""

    data: int = -1                    # batch split, parameters replicated
    fsdp: int = 1                     # batch split, parameters and optimizer state split too
    tensor: int = 1                   # heads, FFN width and vocabulary split
    distributed: Literal["auto", "on", "off"] = "auto"   # jax.distributed.initialize: see sharding.py
    coordinator_address: str = ""     # "host:port" of process 0; else $JAX_COORDINATOR_ADDRESS
    num_processes: int = 0            # 0: $JAX_NUM_PROCESSES or auto-detected
    process_id: int = -1              # -1: $JAX_PROCESS_ID or auto-detected

    def __post_init__(self):
        sizes = {a: getattr(self, a) for a in ("data", "fsdp", "tensor")}
        if any(s == 0 or s < -1 for s in sizes.values()):
            raise ConfigError(f"mesh axes {sizes}: each must be positive, or -1 for 'all devices left'")
        if list(sizes.values()).count(-1) > 1:
            raise ConfigError(f"mesh axes {sizes}: at most one axis may be -1; give the others sizes")
        if self.distributed not in ("auto", "on", "off"):
            raise ConfigError(f"mesh.distributed={self.distributed!r}; use 'auto', 'on' or 'off'")

    def batch_divisor(self) -> int | None:
        """data * fsdp when both are fixed (the batch must be a multiple of it), else None."""
        return None if -1 in (self.data, self.fsdp) else self.data * self.fsdp


@dataclasses.dataclass(frozen=True)
class DistillConfig:
    """Learning from a teacher: its cached top-k (sources with objective "kd") and its traces ("sft", "redi").

    A "kd" source's rows are trained on `w * KD + (1 - w) * CE`, w ramped from 0 to kd_weight over
    kd_warmup_steps. `cache` is the directory `bitjax cache-teacher` writes, one sub-cache per "kd" source;
    `teacher`, `k`, `cache_examples` and `cache_backend` are that command's defaults for this recipe:
    `cache_backend` "native" runs the teacher in its own runtime (llama.cpp for gguf:, CPU torch for hf:),
    "jax" imports it into a full-precision bitjax model run jitted and sharded over the recipe's mesh
    (bitjax.teachers.jax_teacher: the accelerators write the cache). With `online` the
    teacher runs inside the train step instead (bitjax.teachers.online): "kd" sources read plain text and
    their top-k is computed on the devices; no cache is read.
    """

    cache: str = ""                   # directory of per-source teacher top-k caches
    teacher: str = ""                 # gguf:PATH | gguf:smollm2 | hf:DIR | hf:ORG/NAME | bitjax:RUN_DIR (...spec)
    k: int = 32                       # top-k entries per position in the cache
    cache_examples: int = 256         # sequences cached, split over the "kd" sources by their weights
    cache_backend: Literal["native", "jax"] = "native"   # how cache-teacher runs `teacher` (its --backend)
    kind: Divergence = "forward_kl"   # a name in bitjax.losses.divergences.DIVERGENCES
    tail: TailMode = "bucket"
    temperature: float = 1.0
    kd_weight: float = 0.9
    kd_warmup_steps: int = 0
    beta: float = 0.5                 # JSD interpolation
    skew: float = 0.1                 # skew-KL mixing weight (DistiLLM)
    redi_alpha: float = 0.8           # REDI: weight of the negative traces' log-likelihood
    online: bool = False              # run `teacher` in the train step (full precision, frozen) instead of a cache
    # BitDistill's attention-relation loss (bitjax.losses.relation): Q-Q, K-K, V-V relations of one block against
    # the online teacher's, added to each "kd" source's loss with this weight (0: off).
    relation_weight: float = 0.0
    relation_layer: int = -1          # the block, in both models (negative: from the end; -1 the last)
    relation_heads: int = 8           # relation heads the query and key/value widths are split into

    def __post_init__(self):
        if self.online and not self.teacher:
            raise ConfigError("distill.online=true needs a teacher: set distill.teacher=hf:DIR, gguf:PATH, "
                              "gguf:smollm2 or bitjax:RUN_DIR")
        finite(self, "temperature", "kd_weight", "beta", "skew", "redi_alpha", "relation_weight")
        if not self.relation_weight >= 0:
            raise ConfigError(f"distill.relation_weight={self.relation_weight} must be >= 0 (0 turns it off)")
        if self.relation_weight > 0 and not self.online:
            raise ConfigError(f"distill.relation_weight={self.relation_weight} needs the teacher's attention in the "
                              "same step: set distill.online=true (and distill.teacher), or distill.relation_weight=0")
        if not 0.0 <= self.kd_weight <= 1.0:
            raise ConfigError(f"distill.kd_weight={self.kd_weight} must lie in [0, 1]")
        if self.temperature <= 0:
            raise ConfigError(f"distill.temperature={self.temperature} must be positive")
        if not 0.0 < self.beta < 1.0 or not 0.0 < self.skew < 1.0:
            raise ConfigError("distill.beta and distill.skew must lie in (0, 1)")
        if not 0.0 <= self.redi_alpha <= 1.0:
            raise ConfigError(f"distill.redi_alpha={self.redi_alpha} must lie in [0, 1]")
        positive(self, "k", "cache_examples", "relation_heads")
        if self.cache_backend not in ("native", "jax"):
            raise ConfigError(f"distill.cache_backend={self.cache_backend!r}; use 'native' (llama.cpp / torch) or "
                              "'jax' (the teacher imported and sharded over the mesh)")


@dataclasses.dataclass(frozen=True)
class LogConfig:
    """Where the scalars go besides TensorBoard and metrics.jsonl (always written): Weights & Biases, optional.

    With `wandb` the scalars TensorBoard gets are logged to a W&B run as well (bitjax.training.wandb_run; the
    `wandb` extra, and `wandb login` or WANDB_MODE=offline). The W&B run's id is kept in the run directory, so a
    resumed run goes on logging to the same W&B run.
    """

    wandb: bool = False
    project: str = "bitjax"           # the W&B project
    name: str = ""                    # the W&B run's display name ("": the recipe's name)
    tags: tuple[str, ...] = ()        # W&B tags; on the command line: --set log.tags=kd,tiny


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One training run: model, data, optimizer, checkpointing, logging and the loop's own settings."""

    name: str = "run"
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig.tiny)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    checkpoint: CheckpointConfig = dataclasses.field(default_factory=CheckpointConfig)
    mesh: MeshConfig = dataclasses.field(default_factory=MeshConfig)
    distill: DistillConfig = dataclasses.field(default_factory=DistillConfig)
    log: LogConfig = dataclasses.field(default_factory=LogConfig)
    steps: int = 300
    seed: int = 0
    log_every: int = 10
    eval_every: int = 100
    eval_batches: int = 4
    eval_prompts: str = ""            # held-out problems with gold answers (a `bitjax traces` file) for `bitjax eval`
    eval_task: str = ""               # a task whose held-out problems `bitjax eval` (and training's eval) answers
    eval_problems: int = 100          # ... how many of them
    eval_max_new_tokens: int = 192    # greedy tokens generated per problem by `bitjax eval`
    quant_warmup_steps: int = 0       # gradual quantization ramp; 0 = fully ternary from step 0
    init_from: str = ""               # first parameters from a pretrained model: gguf:PATH | hf:DIR | hf:ORG/NAME ...
    # Sequence positions per block of the chunked LM head and loss (bitjax.losses.chunked_head): one (B, chunk, V)
    # float32 block is live at a time (about 250 MiB for 2 local rows at V=128256); the block is the largest divisor of
    # data.seq_len that is at most this.
    loss_chunk: int = 256
    # A step whose loss, gradient norm or updated state is not finite (bitjax.training.nonfinite): "stop" the run
    # before anything from it is saved, or "skip" its update and stop after max_skips_in_a_row in a row.
    on_nonfinite: Literal["stop", "skip"] = "stop"
    max_skips_in_a_row: int = 10

    def __post_init__(self):
        positive(self, "steps", "log_every", "eval_every", "eval_batches", "eval_max_new_tokens", "eval_problems",
                 "loss_chunk", "max_skips_in_a_row")
        if self.on_nonfinite not in ("stop", "skip"):
            raise ConfigError(f"on_nonfinite={self.on_nonfinite!r}; use 'stop' (end the run at the first non-finite "
                              "step) or 'skip' (drop such updates)")
        if self.quant_warmup_steps < 0:
            raise ConfigError(f"quant_warmup_steps={self.quant_warmup_steps} must be >= 0")
        if self.model.int8_matmul and self.quant_warmup_steps > 0:
            raise ConfigError(f"model.int8_matmul=True runs at quantization strength 1, quant_warmup_steps="
                              f"{self.quant_warmup_steps} ramps it; set model.int8_matmul=false or "
                              "quant_warmup_steps=0")
        if self.model.max_seq_len < self.data.seq_len:
            raise ConfigError(
                f"data.seq_len={self.data.seq_len} exceeds model.max_seq_len={self.model.max_seq_len}; "
                "lower data.seq_len or raise model.max_seq_len")
        div = self.mesh.batch_divisor()
        if div and self.data.batch_size % div:
            raise ConfigError(
                f"data.batch_size={self.data.batch_size} is not divisible by the batch axes "
                f"mesh.data*mesh.fsdp={self.mesh.data}*{self.mesh.fsdp}={div}; use a multiple of {div}, "
                f"e.g. --set data.batch_size={max(div, self.data.batch_size - self.data.batch_size % div)}")
        kd_sources = [s.name for s in self.data.sources if s.needs_teacher]
        if self.distill.relation_weight > 0:
            if not kd_sources:
                raise ConfigError(f"distill.relation_weight={self.distill.relation_weight} applies to \"kd\" sources, "
                                  "and no data source has objective \"kd\"; give one objective=\"kd\" or set "
                                  "distill.relation_weight=0")
            relation_loss.check_model(self.model, self.distill.relation_layer, self.distill.relation_heads, "student")
        online_only = [s.name for s in self.data.sources if s.needs_teacher and not s.objective_spec.cached_teacher]
        if online_only and not self.distill.online:
            raise ConfigError(f"data sources {', '.join(online_only)} learn from the teacher's top-k on their rows, "
                              "which only an online teacher computes; set --set distill.online=true and "
                              "distill.teacher=SPEC")
        if kd_sources and not self.distill.cache and not self.distill.online:
            raise ConfigError(f"data sources {', '.join(kd_sources)} distil from a teacher cache but distill.cache "
                              "is empty; set --set distill.cache=DIR (write it with `bitjax cache-teacher`), or "
                              "run the teacher in the step with --set distill.online=true")


