"""Append-only JSONL outputs that survive being killed: what `bitjax rephrase` and `bitjax traces` write.

A record is one line, flushed and synced before the next is generated, so a stopped run loses at most the
line in flight; rerunning first drops that torn line, then skips what is already there. Sampling seeds
are derived from the record's identity, so the output does not depend on where a run was interrupted.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from bitjax.errors import ConfigError


def drop_torn_line(path: Path) -> None:
    """Cut a last line left incomplete by a killed run, keeping every complete one."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with path.open("r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)


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
