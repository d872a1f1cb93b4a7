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
  epochs    drawn / held
and for a distilling source, the cache's size on disk and the teacher time to write it at a given throughput.
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
    estimated: bool = False    # `held` is an estimate (a streamed source: bitjax.data.streaming)

    @property
    def epochs(self) -> float | None:
        return None if self.held is None else self.drawn / max(self.held, 1)


def cache_bytes_per_position(k: int, vocab_size: int, logprob_bytes: int = 2) -> int:
    """Teacher bytes of one cached position: k ids (2 or 4 bytes), k log-probs, one float32 tail."""
    id_bytes = schema.teacher_id_dtype(vocab_size).itemsize       # the cache's own rule (uint16 or int32)
    return k * (id_bytes + logprob_bytes) + 4 + len(schema.SEQUENCE_FIELDS) * 4   # int32 sequence fields


def coverage(cfg, pipeline=None) -> list[SourceCoverage]:
    """The table for a TrainConfig and its built data pipeline (bitjax.data.pipeline.Pipeline).

    Without a pipeline (its tokenizer or data are not on this machine) the sizes come from the config alone:
    a distilling source holds its planned cache, a text source an unknown amount.
    """
    positions = cfg.steps * cfg.data.batch_size * cfg.data.seq_len
    per_position = cache_bytes_per_position(cfg.distill.k, cfg.model.vocab_size)
    weights = pipeline.weights if pipeline is not None else _normalized(cfg.data.mixture_weights())
    rows = []
    for name, weight in weights.items():
        if pipeline is None:
            src = next(s for s in cfg.data.sources if s.name == name)
            cached = src.needs_teacher and not cfg.distill.online   # an online teacher reads the text itself
            planned = cfg.distill.cache_examples * cfg.data.seq_len if cached else None
            rows.append(SourceCoverage(name, src.resolved_objective, weight, int(round(weight * positions)),
                                       planned, planned * per_position if planned else 0, planned is None))
            continue
        p = pipeline.sources.get(name)
        if p is None:
            continue
        cache_bytes, written, estimated = 0, True, False
        if p.cache is not None:
            held = len(p.cache) * cfg.data.seq_len
            cache_bytes = held * per_position
        elif p.rows == "teacher_cache" and not cfg.distill.online:   # cache not opened yet (plan first)
            held, written = cfg.distill.cache_examples * cfg.data.seq_len, False
            cache_bytes = held * per_position
        elif p.pairs is not None:
            held = len(p.pairs) * cfg.data.seq_len
        elif p.stream is not None:
            held, estimated = p.stream.estimated_tokens(), True
        else:
            held = p.train.n_tokens
        rows.append(SourceCoverage(name, p.objective, weight, int(round(weight * positions)), int(held),
                                   int(cache_bytes), written, estimated))
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
        lines.append("  * planned size: distill.cache_examples sequences (the cache is not written yet)")
    if any(r.estimated for r in rows):
        lines.append("  ~ estimated from the files' metadata (Parquet column sizes, file sizes, record counts) and "
                     "one tokenized chunk")
    if any(r.held is None for r in rows):
        lines.append("  ? this machine cannot read that source (tokenizer or data missing): sizes unknown")
    repeated = [r.name for r in rows if r.epochs is not None and r.epochs > 1.0]
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


def _size(n: int) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"
