"""What a W&B run wrote to disk: the records of its transaction log (`run-ID.wandb`), read back for tests.

W&B 0.31 ships no Python reader for the log (its Go core writes and syncs it), so the framing is read here:
a 7-byte header (":W&B", 0xBEE1, version 0), then LevelDB-log records in 32 KiB blocks, each with a 7-byte
header (CRC-32 of type and data, length, type: full, or first/middle/last pieces of a record that crosses a
block). Each record is a `wandb_internal_pb2.Record`, decoded with W&B's own protobuf classes.
"""

import json
import struct
import zlib
from pathlib import Path

from wandb.proto import wandb_internal_pb2

FILE_HEADER = struct.pack("<4sHB", b":W&B", 0xBEE1, 0)
BLOCK, HEADER = 32768, 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> list:
    data = Path(path).read_bytes()
    assert data[:HEADER] == FILE_HEADER, f"{path} is not a W&B transaction log"
    out, pending, pos = [], b"", HEADER
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:            # a block's tail too short for a header is padding
            pos += left
            continue
        crc, length, kind = struct.unpack_from("<IHB", data, pos)
        if kind == 0:                # zero padding to the end of the block (or of the file)
            pos += left
            continue
        chunk = data[pos + HEADER:pos + HEADER + length]
        assert zlib.crc32(chunk, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF == crc, f"{path}: bad record at {pos}"
        pos += HEADER + length
        pending = chunk if kind in (FULL, FIRST) else pending + chunk
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            out.append(record)
    return out


def run_and_history(path: Path) -> tuple:
    """(the run record, {step: {key: value}}) of one transaction log."""
    found = records(path)
    run = next(r.run for r in found if r.WhichOneof("record_type") == "run")
    history = {}
    for r in found:
        if r.WhichOneof("record_type") == "history":
            items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
            history.setdefault(r.history.step.num, {}).update({k: v for k, v in items.items() if not k.startswith("_")})
    return run, history
