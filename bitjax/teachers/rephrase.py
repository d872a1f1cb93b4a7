"""BeyondWeb-style rephrasing: natural passages rewritten by a generator model into denser formats.

Each (document, format) pair becomes one JSONL record with its provenance and its quality-gate scores:
  {"id", "text", "source", "source_id", "passage", "format", "generator", "settings", "prompt_sha256", "gates"}
A record that fails a gate (bitjax.rephrase_gates) goes to the side file `<out stem>.rejected.jsonl`
instead of `out`, so nothing generated is lost and kept + rejected = generated.
The output is appended one flushed line at a time, so a stopped run loses at most the line in flight;
rerunning the same command skips the pairs already written (a torn last line is dropped first).
Sampling is seeded per pair, so the result does not depend on where a run was interrupted.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

from tqdm import tqdm

from bitjax.data.sources import uris
from bitjax.data.sources.corpora import split_passages
from bitjax.data.sources.records import Fields
from bitjax.errors import ConfigError
from bitjax.teachers import jsonl_output, rephrase_gates
from bitjax.teachers.chat_models import open_chat_model

PROMPTS_DIR = Path(__file__).resolve().parents[2] / "data" / "rephrase"
DEFAULT_FORMATS = ("qa", "textbook", "summary")


@dataclasses.dataclass(frozen=True)
class Settings:
    max_new_tokens: int = 128
    temperature: float = 0.7
    top_p: float = 0.9
    seed: int = 0
    max_chars: int = 800          # a passage is cut to whole paragraphs within this many characters
    n_ctx: int = 2048


def load_prompts(formats: list[str], prompts_dir: Path = PROMPTS_DIR) -> dict[str, str]:
    """The prompt template of each format, `<prompts_dir>/<format>.txt`, holding a `{text}` placeholder."""
    prompts = {}
    for name in formats:
        path = Path(prompts_dir) / f"{name}.txt"
        if not path.is_file():
            known = ", ".join(sorted(p.stem for p in Path(prompts_dir).glob("*.txt")))
            raise ConfigError(f"no prompt for format {name!r} at {path}; known formats: {known}")
        template = path.read_text(encoding="utf-8")
        if "{text}" not in template:
            raise ConfigError(f"{path}: the prompt has no {{text}} placeholder; put {{text}} where the passage goes")
        prompts[name] = template
    return prompts


def make_generator(spec: str, settings: Settings, n_threads: int):
    """`smollm2` (the embedded GGUF), a `.gguf` file (llama.cpp) or a model directory (transformers)."""
    try:
        return open_chat_model(spec, n_ctx=settings.n_ctx, n_threads=n_threads, seed=settings.seed)
    except ConfigError as e:
        raise ConfigError(f"--generator {spec}: {e}") from None


# --------------------------------------------------------------------------- the run


def pair_seed(seed: int, source_id: str, fmt: str) -> int:
    return jsonl_output.stable_seed(seed, source_id, fmt)


def passage_of(text: str, max_chars: int) -> str:
    """The leading whole paragraphs of a document within max_chars (at least one paragraph, cut if huge)."""
    first = split_passages(text, max_chars)
    return first[0][: 2 * max_chars] if first else ""


def rejected_path(out: Path) -> Path:
    """The side file of lines that failed a gate: `shakespeare.jsonl` -> `shakespeare.rejected.jsonl`."""
    return out.with_name(out.stem + ".rejected.jsonl")


def read_done(out: Path) -> tuple[set[tuple[str, str]], dict | None]:
    """Pairs already in the output, and the provenance of its first record; drops a torn last line."""
    records = jsonl_output.read_own_records(
        out, lambda r, where: isinstance(r, dict) and {"source_id", "format", "text"} <= r.keys(), "rephrase")
    return {(r["source_id"], r["format"]) for r in records}, (records[0] if records else None)


def read_done_both(out: Path) -> tuple[set[tuple[str, str]], dict | None]:
    """Pairs already kept or rejected: a rejected pair is not generated again on resume."""
    kept, first = read_done(out)
    rejected, first_rejected = read_done(rejected_path(out))
    return kept | rejected, first or first_rejected


def rephrase(source_uri: str, out: str | Path, *, formats: list[str], generator: str = "smollm2",
             limit: int | None = None, settings: Settings = Settings(), n_threads: int = 1,
             prompts_dir: Path = PROMPTS_DIR, fields: Fields = Fields(),
             thresholds: rephrase_gates.Thresholds | None = rephrase_gates.DEFAULTS,
             progress: bool = True) -> dict:
    """Rephrase the first `limit` documents of `source_uri` into each format, appending to `out`.

    Every line records its gate scores; with `thresholds` (the default) a line failing any gate goes to
    `rejected_path(out)`, with `thresholds=None` every non-empty line is kept (scores still recorded).
    An empty generation is always rejected (gate "empty"), so kept + rejected = generated.
    """
    out = Path(out)
    # first: a file that is not this command's output (or its side file) is refused untouched
    done, first = read_done_both(out)
    prompts = load_prompts(formats, prompts_dir)
    docs = uris.load_documents(source_uri, fields)[:limit]
    # The gate thresholds belong to the settings: resuming with other thresholds would mix two verdicts.
    settings_dict = {**dataclasses.asdict(settings),
                     "gates": dataclasses.asdict(thresholds) if thresholds is not None else None}
    jsonl_output.check_settings(out, first, settings_dict)
    todo = [(doc, fmt) for doc in docs for fmt in formats if (doc["id"], fmt) not in done]
    summary = {"output": str(out), "rejected_output": str(rejected_path(out)), "already_done": len(done),
               "generated": 0, "written": 0, "rejected": 0, "failed_by_gate": {}}
    if not todo:
        return summary
    gen = make_generator(generator, settings, n_threads)
    out.parent.mkdir(parents=True, exist_ok=True)
    prompt_sha = {f: hashlib.sha256(p.encode()).hexdigest()[:16] for f, p in prompts.items()}
    with out.open("a", encoding="utf-8") as kept_f, rejected_path(out).open("a", encoding="utf-8") as rejected_f, \
            tqdm(total=len(todo), disable=not progress, desc="rephrase", dynamic_ncols=True) as bar:
        for doc, fmt in todo:
            passage = passage_of(doc["text"], settings.max_chars)
            text = gen(prompts[fmt].replace("{text}", passage), settings, pair_seed(settings.seed, doc["id"], fmt))
            verdict = rephrase_gates.verdict(text, passage, thresholds)
            record = {"id": f"{doc['id']}#{fmt}", "text": text, "source": source_uri, "source_id": doc["id"],
                      "source_chars": len(passage), "passage": passage, "format": fmt, "generator": gen.name,
                      "settings": settings_dict, "prompt_sha256": prompt_sha[fmt], "gates": verdict}
            jsonl_output.append(rejected_f if verdict["failed"] else kept_f, record)
            summary["generated"] += 1
            summary["rejected" if verdict["failed"] else "written"] += 1
            for gate in verdict["failed"]:
                summary["failed_by_gate"][gate] = summary["failed_by_gate"].get(gate, 0) + 1
            bar.update(1)
            bar.set_postfix(kept=summary["written"], rejected=summary["rejected"])
    return summary
