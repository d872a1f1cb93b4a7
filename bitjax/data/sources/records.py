"""Documents from JSON lines and ArrayRecord files, each record checked with its file and line named.

A text document is `{"id": str, "text": str, "prompt": str}`; `prompt` is empty unless the source names a
prompt field (prompt/completion pairs), in which case the prompt is not trained on.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bitjax.errors import DataError, first_line


@dataclass(frozen=True)
class Fields:
    """Which JSON fields make a document: the trained text and, optionally, an untrained prompt."""

    text: str = "text"
    prompt: str = ""
    id: str = "id"
    max_line_bytes: int = 64 << 20    # a longer JSONL line is refused (it would be read whole into memory)


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


def json_to_document(raw: bytes, fields: Fields, where: str, keep: tuple[str, ...] = ()) -> dict:
    """One UTF-8 JSON record (a JSONL line, an ArrayRecord record) as a document."""
    try:
        record = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise DataError(f"{where}: invalid UTF-8 at byte {e.start}; re-encode the file as UTF-8") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
    except (ValueError, RecursionError) as e:   # a number of over 4300 digits, arrays nested thousands deep
        raise DataError(f"{where}: JSON that Python cannot hold ({first_line(e)}); fix or rewrite the line") from None
    return record_to_document(record, fields, where, keep)


def read_jsonl(path: str | Path, fields: Fields = Fields(), keep: tuple[str, ...] = ()) -> Iterator[dict]:
    """Documents of a JSONL file; a line that is not JSON, not UTF-8 or lacks a field is an error naming it."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty; remove the source or fill it with JSON lines")
    with path.open("rb") as f:
        # readline with a limit: a line of hundreds of MB is refused after reading the cap, not all of it
        for lineno, raw in enumerate(iter(lambda: f.readline(fields.max_line_bytes + 1), b""), start=1):
            where = f"{path}:{lineno}"
            if len(raw) > fields.max_line_bytes:
                raise DataError(f"{where}: the line is longer than {fields.max_line_bytes} bytes; split the "
                                "document or raise the source's max_line_bytes")
            if raw.strip():
                yield json_to_document(raw, fields, where, keep)


def read_arrayrecord(path: str | Path, fields: Fields = Fields()) -> Iterator[dict]:
    """Documents of an ArrayRecord file of UTF-8 JSON records (Grain's ArrayRecordDataSource reads it)."""
    import grain

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty; remove the source or write records into it")
    try:   # array_record raises bare RuntimeErrors (or aborts reads) on damaged files
        source = grain.sources.ArrayRecordDataSource([str(path)])
        n = len(source)
    except Exception as e:
        raise DataError(f"{path}: not a readable ArrayRecord file ({first_line(e)}); rewrite it with "
                        "bitjax.data.sources.records.write_arrayrecord") from None
    if n == 0:
        raise DataError(f"{path}: the file holds no records")
    for index in range(n):
        where = f"{path}:record {index}"
        try:
            blob = source[index]
        except Exception as e:
            raise DataError(f"{where}: cannot be read ({first_line(e)}); the file is truncated or damaged, "
                            "rewrite it") from None
        yield json_to_document(blob, fields, where)


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
