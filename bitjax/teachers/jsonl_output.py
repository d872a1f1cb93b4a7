"""Append-only JSONL outputs that survive being killed: what `bitjax rephrase` and `bitjax traces` write.

A record is one line, flushed and synced before the next is generated, so a stopped run loses at most the
line in flight; rerunning first checks that every complete line is one of the command's records (so a
user's other file given as --out is refused untouched), then drops the torn line, then skips what is there.
Sampling seeds are derived from the record's identity, so the output does not depend on where a run was interrupted.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from bitjax.errors import ConfigError

# Every record these commands write starts with this key, so a torn line of theirs starts with it too.
RECORD_START = b'{"id": '


def read_own_records(path: Path, check, command: str) -> list[dict]:
    """The complete records of an output file, each passed through `check(record, where)`; then the torn
    last line a killed run left is cut. Nothing is cut unless the file is this command's own output.

    `check` raises (or returns False) for a line that is not one of the command's records; that is an error
    naming the file, and the file is left exactly as it was.
    """
    if not path.exists():
        return []
    if not path.is_file():
        raise ConfigError(f"--out {path} is not a file; pass a JSONL file path")
    data = path.read_bytes()
    complete, _, torn = data.rpartition(b"\n") if b"\n" in data else (b"", b"", data)
    foreign = ConfigError(f"--out {path} exists and is not a `bitjax {command}` output; nothing was changed: "
                          "pass a new --out path")
    records = []
    for lineno, raw in enumerate(complete.split(b"\n") if complete else [], start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise foreign from None
        try:
            ok = check(record, f"{path}:{lineno}")
        except (ConfigError, KeyError, TypeError, ValueError):
            raise foreign from None
        if ok is False:
            raise foreign
        records.append(record)
    if torn:
        if not torn.startswith(RECORD_START):   # not a record cut short: someone else's text
            raise foreign
        with path.open("r+b") as f:
            f.truncate(len(data) - len(torn))
    return records


def append(f, record: dict) -> None:
    f.write(json.dumps(record, ensure_ascii=False) + "\n")
    f.flush()
    os.fsync(f.fileno())


def check_settings(path: Path, first_record: dict | None, settings: dict) -> None:
    """Resuming is only meaningful with the settings the file was started with."""
    if first_record is not None and first_record.get("settings") != settings:
        raise ConfigError(f"{path} was written with settings {first_record.get('settings')}, not {settings}; "
                          "rerun with the same settings to resume, or pass a new --out")


def stable_seed(*parts) -> int:
    """A 31-bit sampling seed that depends only on `parts` (e.g. the base seed, a record id, a sample index)."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF
