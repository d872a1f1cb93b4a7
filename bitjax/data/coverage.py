"""How much of each source a run reads: tokens drawn against tokens held, and what a teacher cache costs.

A run draws `steps x batch_size x seq_len` positions, split over the sources by their mixing weights. A source
that holds fewer is read more than once: harmless for a large corpus mixed thinly, silent overfitting for a
teacher cache written for a fraction of the run (the 2b4t recipe's cache would be read ~117 times). `bitjax plan`
prints this table before anything is trained, and `bitjax train` prints it at start.

Per source:
  drawn     positions the run reads from it (weight x steps x batch x seq_len)
  held      positions it holds: a text source's training tokens, a cache's sequences x seq_len, REDI pairs x
            seq_len; a cache not written yet counts distill.cache_examples sequences (with an online teacher a
            distilling source reads its text, like a text source); a streamed source's tokens are estimated
            (marked ~) from its files' metadata and one tokenized chunk, never by reading it
  epochs    drawn / held; for a cache that continues with its text (on_cache_exhausted="ce") at most 1
and for a distilling source, the cache's size on disk and the teacher time to write it at a given throughput.
Below the table, each cached "kd" source's choice (SourceConfig.on_cache_exhausted) and what the run will do
with it: "cache read 2.30 times", or "cache once, then 1.30 epochs of its text under CE".
"""

from __future__ import annotations

import dataclasses

from bitjax.data import schema


@dataclasses.dataclass(frozen=True)
class SourceCoverage:
    name: str
    objective: str
    weight: float
    drawn: int                 # positions the run reads
    held: int | None           # positions the source holds (None: unknown, its data could not be read)
    cache_bytes: int = 0       # a distilling source's teacher cache on disk (top-k ids, log-probs, tail)
    cache_written: bool = True
    on_cache_exhausted: str = ""   # a cached "kd" source's choice once its cache is read ("repeat" | "ce")
    text_held: int | None = None   # its text's training positions ("ce" continues there; None: unknown)
    estimated: bool = False    # `held` is an estimate (a streamed source: bitjax.data.sources.streaming)

    @property
    def epochs(self) -> float | None:
        if self.held is None:
            return None
        reads = self.drawn / max(self.held, 1)
        return min(reads, 1.0) if self.on_cache_exhausted == "ce" else reads

    @property
    def ce_positions(self) -> int:
        """Positions a "ce" source reads from its text after the cache, under CE."""
        return max(0, self.drawn - self.held) if self.on_cache_exhausted == "ce" and self.held is not None else 0

    def repeats(self) -> bool | None:
        """Whether the run reads some of this source's data more than once (None: unknown)."""
        if self.on_cache_exhausted == "ce" and self.ce_positions:
            # the text after the cache starts where the cached sequences end: it wraps past the text's end
            return None if self.text_held is None else self.drawn > self.text_held
        return None if self.epochs is None else self.epochs > 1.0

    def plan(self, on_exhausted: str) -> str:
        """What the run does with a cached "kd" source's cache (and, with "ce", its text after it)."""
        reads = self.drawn / max(self.held or 1, 1)
        stop = on_exhausted == "error"
        if self.on_cache_exhausted == "repeat" or reads <= 1.0:
            if reads > 1.0 and stop:
                return "cache once, then the run stops (data.on_exhausted=error)"
            return f"cache read {reads:,.2f} times"
        if not self.text_held:
            return (f"cache once, then {_count(self.ce_positions)} positions of its text under CE ({self.name}.ce "
                    "rows; the text's size is unknown here)")
        text = f"{self.ce_positions / self.text_held:,.2f} epochs of its text"
        if stop and self.repeats():
            return f"cache once, then its text under CE until it runs out and the run stops ({text} wanted)"
        return f"cache once, then {text} under CE ({self.name}.ce rows)"


def cache_bytes_per_position(k: int, vocab_size: int, logprob_bytes: int = 2) -> int:
    """Teacher bytes of one cached position: k ids (2 or 4 bytes), k log-probs, one float32 tail."""
    id_bytes = schema.teacher_id_dtype(vocab_size).itemsize       # the cache's own rule (uint16 or int32)
    return k * (id_bytes + logprob_bytes) + 4 + len(schema.SEQUENCE_FIELDS) * 4   # int32 sequence fields


def cache_examples_per_source(cfg, n_examples: int) -> dict[str, int]:
    """How many sequences `bitjax cache-teacher` caches for each "kd" source: `n_examples` split by the mixing
    weights, at least one each (empty when no source with a positive weight distils)."""
    weights = cfg.data.mixture_weights()
    kd = {s.name: weights[s.name] for s in cfg.data.sources if s.needs_teacher and weights[s.name] > 0}
    total = sum(kd.values())
    return {name: max(1, round(n_examples * w / total)) for name, w in kd.items()}


def coverage(cfg, pipeline=None) -> list[SourceCoverage]:
    """The table for a TrainConfig and its built data pipeline (bitjax.data.pipeline.Pipeline).

    Without a pipeline (its tokenizer or data are not on this machine) the sizes come from the config alone:
    a distilling source holds its planned cache, a text source an unknown amount.
    """
    positions = cfg.steps * cfg.data.batch_size * cfg.data.seq_len
    per_position = cache_bytes_per_position(cfg.distill.k, cfg.model.vocab_size)
    weights = pipeline.weights if pipeline is not None else _normalized(cfg.data.mixture_weights())
    planned = {name: n * cfg.data.seq_len for name, n in cache_examples_per_source(cfg, cfg.distill.cache_examples)
               .items()}
    rows = []
    for name, weight in weights.items():
        src = next(s for s in cfg.data.sources if s.name == name)
        cached = src.needs_teacher and not cfg.distill.online   # an online teacher reads the text itself
        choice = src.on_cache_exhausted if cached else ""
        drawn = int(round(weight * positions))
        if pipeline is None:
            held = planned[name] if cached else None
            rows.append(SourceCoverage(name, src.resolved_objective, weight, drawn, held,
                                       held * per_position if held else 0, not cached, choice))
            continue
        p = pipeline.sources.get(name)
        if p is None:
            continue
        cache_bytes, written, estimated = 0, True, False
        if p.cache is not None:
            held = len(p.cache) * cfg.data.seq_len
            cache_bytes = held * per_position
        elif cached:   # cache not opened yet (plan first)
            held, written = planned[name], False
            cache_bytes = held * per_position
        elif p.pairs is not None:
            held = len(p.pairs) * cfg.data.seq_len
        elif p.stream is not None:
            held, estimated = p.stream.estimated_tokens(), True
        else:
            held = p.train.n_tokens
        text = p.train.n_tokens if cached and p.train is not None else None
        rows.append(SourceCoverage(name, p.objective, weight, drawn, int(held), int(cache_bytes), written, choice,
                                   text, estimated))
    return rows


def render(rows: list[SourceCoverage], steps: int, on_exhausted: str,
           teacher_tokens_per_s: float | None = None) -> str:
    lines = [f"data coverage over {steps:,} steps (positions drawn vs held per source):",
             f"  {'source':<14}{'objective':<10}{'weight':>7}{'drawn':>16}{'held':>16}{'epochs':>9}"
             f"{'cache':>11}" + ("   teacher time" if teacher_tokens_per_s else "")]
    for r in rows:
        cache = _size(r.cache_bytes) + ("" if r.cache_written else "*") if r.cache_bytes else "-"
        held = "?" if r.held is None else ("~" if r.estimated else "") + f"{r.held:,}"
        epochs = "?" if r.epochs is None else f"{r.epochs:.2f}"
        line = f"  {r.name:<14}{r.objective:<10}{r.weight:>7.2f}{r.drawn:>16,}{held:>16}{epochs:>9}{cache:>11}"
        if teacher_tokens_per_s and r.cache_bytes:
            line += f"   {_hours(r.held / teacher_tokens_per_s)} at {teacher_tokens_per_s:,.0f} tokens/s"
        lines.append(line)
    if any(not r.cache_written for r in rows):
        lines.append("  * planned size: its share of distill.cache_examples sequences (the cache is not written yet)")
    if any(r.estimated for r in rows):
        lines.append("  ~ estimated from the files' metadata (Parquet column sizes, file sizes, record counts) and "
                     "one tokenized chunk")
    if any(r.held is None for r in rows):
        lines.append("  ? this machine cannot read that source (tokenizer or data missing): sizes unknown")
    kd = [r for r in rows if r.on_cache_exhausted]
    if kd:
        lines.append("  teacher caches, and what each kd source does once its cache is read "
                     "(SourceConfig.on_cache_exhausted):")
        lines += [f"    {r.name:<14}{r.on_cache_exhausted:<8}{r.plan(on_exhausted)}" for r in kd]
    repeated = [r.name for r in rows if r.repeats()]
    if repeated:
        what = "repeated" if on_exhausted == "repeat" else "the run stops when one runs dry"
        lines.append(f"  read more than once: {', '.join(repeated)} ({what}: data.on_exhausted={on_exhausted}); "
                     "add data or a bigger cache to see each position once")
    return "\n".join(lines)


def _normalized(weights: dict[str, float]) -> dict[str, float]:
    total = sum(weights.values())
    return {name: w / total for name, w in weights.items() if w > 0}


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:,.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def _count(n: int) -> str:
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)


def _size(n: int) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"
