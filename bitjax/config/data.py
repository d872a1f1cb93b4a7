"""What a run trains on: its sources (SourceConfig) and how they are mixed, packed and batched (DataConfig)."""

from __future__ import annotations

import dataclasses
import typing
from typing import Literal

from bitjax.config._checks import positive
from bitjax.errors import ConfigError
from bitjax.losses.objectives import DEFAULT_OBJECTIVE, OBJECTIVES, ObjectiveName

CacheExhausted = Literal["repeat", "ce"]     # a "kd" source's choice when its teacher cache is used up
CACHE_EXHAUSTED: tuple[str, ...] = typing.get_args(CacheExhausted)


@dataclasses.dataclass(frozen=True)
class SourceConfig:
    """One named training source, its mixing weight, and what the student learns from it.

    uri: tfds:NAME | parquet:GLOB | jsonl:GLOB | arrayrecord:GLOB | tokens:DIR (text; see bitjax.data.sources.uris)
         or traces:PATH (teacher traces written by `bitjax traces`). Paths may be bucket URLs (gs://...).
    text_field / prompt_field: the fields (JSON keys, Parquet columns) of a text document; with a prompt field
      (prompt/completion pairs) the prompt is part of the input but not trained on.
    data_dir: where a `tfds:NAME` dataset other than the shipped corpora was built (TFDS's data_dir).
    stream: read the source lazily (files sharded over the data shards, tokenized on the fly, window-shuffled;
      bitjax.data.sources.streaming) instead of tokenizing it whole once; None takes the kind's default (parquet
      streams, the others are tokenized once: see bitjax.data.sources.uris.SOURCE_KINDS).
    objective: a name in bitjax.losses.objectives.OBJECTIVES (each one's module says what it trains on): "ce"
      (next-token cross-entropy; the default for text), "kd" (distillation from the teacher's top-k, cached in
      `distill.cache/<name>` or online, mixed with CE by distill.kd_weight), "sft" (CE on the completions of
      positive traces; the default for traces:), "redi" (REDI on positive/negative trace pairs), ...
    loss_weight: multiplies this source's loss in the batch loss (see bitjax.losses.objectives).
    on_cache_exhausted: what a "kd" source does once the run has read every sequence of its teacher cache
      (bitjax.data.teacher_files.cache_stream): "repeat" reads the cached sequences again (another epoch of
      the cache, as data.on_exhausted allows); "ce" continues with the source's text after the cached sequences, trained
      with plain CE (its rows are tagged as the source `<name>.ce`, see `DataConfig.row_sources`).
    """

    name: str
    uri: str
    weight: float = 1.0
    text_field: str = "text"
    prompt_field: str = ""
    objective: ObjectiveName = ""
    loss_weight: float = 1.0
    max_line_bytes: int = 64 << 20    # longest JSONL line read; a longer one is refused, naming the file
    on_cache_exhausted: CacheExhausted = "repeat"
    data_dir: str = ""
    stream: bool | None = None

    def __post_init__(self):
        if self.on_cache_exhausted not in CACHE_EXHAUSTED:
            raise ConfigError(f"data source {self.name!r}: on_cache_exhausted={self.on_cache_exhausted!r} is not one "
                              f"of {', '.join(CACHE_EXHAUSTED)} (read the cache again, or its text under CE)")
        if self.stream and self.uri.partition(":")[0] in ("tokens", "traces"):
            raise ConfigError(f"data source {self.name!r} ({self.uri}) cannot stream: only text files do; "
                              "leave stream unset")
        if self.max_line_bytes <= 0:
            raise ConfigError(f"data source {self.name!r}: max_line_bytes={self.max_line_bytes} must be positive")
        if not self.name or "=" in self.name or "," in self.name or "/" in self.name:
            raise ConfigError(f"data source name {self.name!r} must be non-empty without '=', ',' or '/'")
        if not self.weight >= 0:
            raise ConfigError(f"data source {self.name!r}: weight={self.weight} must be >= 0")
        if not self.loss_weight >= 0:
            raise ConfigError(f"data source {self.name!r}: loss_weight={self.loss_weight} must be >= 0")
        if self.resolved_objective not in OBJECTIVES:
            raise ConfigError(f"data source {self.name!r}: objective {self.objective!r} is not one of "
                              f"{', '.join(OBJECTIVES)}")
        fitting = [name for name, o in OBJECTIVES.items() if o.reads == self.reads]
        if self.resolved_objective not in fitting:
            raise ConfigError(f"data source {self.name!r} ({self.uri}) holds {self.reads}: its objective must be "
                              f"one of {', '.join(fitting)}, not {self.objective!r}")

    @property
    def reads(self) -> str:
        """"traces" for teacher traces, else "text"."""
        return "traces" if self.uri.startswith("traces:") else "text"

    @property
    def resolved_objective(self) -> str:
        return self.objective or DEFAULT_OBJECTIVE[self.reads]

    @property
    def objective_spec(self):
        """The source's Objective (bitjax.losses.objectives.table)."""
        return OBJECTIVES[self.resolved_objective]

    @property
    def needs_teacher(self) -> bool:
        return self.objective_spec.teacher

    @property
    def text_after_cache(self) -> SourceConfig | None:
        """The source its text rows after the teacher cache count as (on_cache_exhausted="ce"): `<name>.ce`,
        objective "ce", the same data and loss weight; None for a source that does not continue that way."""
        if not (self.needs_teacher and self.on_cache_exhausted == "ce"):
            return None
        return dataclasses.replace(self, name=f"{self.name}.ce", objective="ce", on_cache_exhausted="repeat")


def _default_sources() -> tuple[SourceConfig, ...]:
    return (SourceConfig("natural", "tfds:shakespeare", 1.0),)


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where training tokens come from, how they are mixed, packed and batched.

    `sources` is a tuple of SourceConfig (set in recipes). The command line cannot reach inside a tuple, so
    the mixing weights have their own flat override, `--set data.weights=natural=0.7,rephrased=0.3`, which
    replaces the named sources' weights (also on resume: the mix continues with the new weights).
    """

    sources: tuple[SourceConfig, ...] = dataclasses.field(default_factory=_default_sources)
    weights: str = ""                 # "name=w,name=w": overrides the sources' weights
    tokenizer: str = "bpe"            # "bpe" (trained on the sources), "bpe-digits" (no merge joins two digits),
                                      # a tokenizer.json, a .gguf, or "smollm2"
    vocab_size: int = 4096            # size of the trained BPE (ignored for a loaded tokenizer)
    seq_len: int = 128
    batch_size: int = 16              # global batch, in sequences
    packing: typing.Literal["concat_then_split", "first_fit"] = "concat_then_split"
    on_exhausted: typing.Literal["repeat", "error"] = "repeat"   # a source that runs dry: new epoch, or stop
    heldout_fraction: float = 0.02    # tail documents of each source kept out of training, for eval
    shuffle_seed: int = 0
    num_shards: int = 0               # data shards of the global stream; 0 = one per process (bitjax.data.shards)
    # Streamed sources (bitjax.data.sources.streaming): documents shuffled at a time (host memory holds this many per
    # source and data shard), and Grain threads reading and tokenizing each open file's chunks.
    shuffle_window: int = 4096
    read_threads: int = 2

    def __post_init__(self):
        positive(self, "seq_len", "batch_size", "vocab_size", "shuffle_window", "read_threads")
        if self.num_shards < 0:
            raise ConfigError(f"data.num_shards={self.num_shards} must be >= 0 (0: one shard per process)")
        if not 0.0 < self.heldout_fraction < 0.5:
            raise ConfigError(f"data.heldout_fraction={self.heldout_fraction} must lie in (0, 0.5)")
        if not self.sources:
            raise ConfigError("data.sources is empty; name at least one source")
        names = [s.name for s in self.row_sources()]
        if len(set(names)) != len(names):
            raise ConfigError(f"data.sources has duplicate names: {names} (a \"kd\" source with "
                              "on_cache_exhausted=\"ce\" also names its text rows <name>.ce); rename one")
        weights = self.mixture_weights()
        if sum(weights.values()) <= 0:
            raise ConfigError(f"data source weights {weights} are all zero; give at least one a positive weight")

    def row_sources(self) -> tuple[SourceConfig, ...]:
        """Every source a row can be tagged with, in `source_id` order: the data sources, then `<name>.ce` for
        each "kd" source whose text continues under CE after its cache (SourceConfig.text_after_cache). The
        loss reads each row's objective from this table; only the data sources are mixed by weight."""
        return self.sources + tuple(t for t in (s.text_after_cache for s in self.sources) if t is not None)

    def mixture_weights(self) -> dict[str, float]:
        """The sources' weights after the `weights` override (not normalised)."""
        weights = {s.name: s.weight for s in self.sources}
        for item in filter(None, (x.strip() for x in self.weights.split(","))):
            name, sep, value = item.partition("=")
            if not sep or name not in weights:
                raise ConfigError(f"data.weights={self.weights!r}: {item!r} is not NAME=WEIGHT with NAME one of "
                                  f"{', '.join(weights)}")
            try:
                weights[name] = float(value)
            except ValueError:
                raise ConfigError(f"data.weights: {item!r} has no numeric weight") from None
            if not weights[name] >= 0:
                raise ConfigError(f"data.weights: {item!r} is negative; weights must be >= 0")
        return weights


