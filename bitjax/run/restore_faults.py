"""What went wrong when a checkpoint did not restore: damage to its files, or a fault of the machine reading it.

Only damage is damage: a value that does not match its saved checksum, a missing or truncated file, a file that
does not parse, a structure that does not match the checkpoint's own metadata. Training sets a damaged newest
step aside (moved, never deleted) and resumes from the one before; eval and export name it.

Anything else raised while restoring is a fault of the reader, not of the files: out of memory (a host or an
accelerator with less room, another job on it), an I/O error that may be transient (a bucket read timing out),
a package that is missing. Nothing is moved for it: the error names the cause in one line, and a rerun once it
is fixed finds every checkpoint where it was. An exception that is neither keeps its traceback (a bug).

Damage is recognised by what the readers raise for it: TensorStore's status codes for bytes that are missing,
short or undecodable (NOT_FOUND, OUT_OF_RANGE, DATA_LOSS, FAILED_PRECONDITION, or an OCDBT b-tree node that
does not decode), FileNotFoundError and JSON decoding errors, and Orbax's tree-structure mismatch.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from bitjax.errors import BitjaxError, ConfigError, first_line

DAMAGE_STATUSES = ("NOT_FOUND", "OUT_OF_RANGE", "DATA_LOSS", "FAILED_PRECONDITION")
MEMORY_STATUSES = ("RESOURCE_EXHAUSTED",)
IO_STATUSES = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "ABORTED", "CANCELLED", "PERMISSION_DENIED", "UNAUTHENTICATED",
               "INTERNAL", "UNKNOWN")
# Orbax's words for a checkpoint whose items or tree do not match its own metadata, and TensorStore's for bytes
# that do not decode when it reports no status code (a flipped bit in an OCDBT b-tree node)
DAMAGE_PHRASES = ("tree structures do not match", "was not found in the checkpoint", "Error decoding b-tree node")


class CheckpointDamagedError(ConfigError):
    """A checkpoint whose files cannot be read back as written (torn, truncated, missing, changed)."""

    def __init__(self, step: int, directory: Path, reason: str, fix: str = ""):
        # Orbax appends a dump of the TensorStore spec to its messages: the sentence before it is the reason
        reason = reason.split(" See full")[0].split(" [tensorstore_spec")[0]
        self.step, self.reason = step, " ".join(reason.split())[:300]
        fix = fix or f"move {directory / str(step)} aside to resume from the step before it"
        super().__init__(f"checkpoint step {step} in {directory} is damaged ({self.reason}); {fix}")


class CheckpointReadError(BitjaxError, RuntimeError):
    """A checkpoint that is not damaged could not be read by this process (memory, I/O, a missing package)."""


def _chain(e: BaseException):
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def _status(e: BaseException) -> str | None:
    """The absl status code a TensorStore or XLA error message starts with (`NOT_FOUND: ...`)."""
    match = re.match(r"\s*([A-Z_]{4,}): ", str(e))
    return match.group(1) if match else None


def classify(error: BaseException) -> tuple[str, str] | None:
    """("damage", reason) or (cause, reason) for a fault of the reader, or None for anything else (a bug).

    The first exception in the chain (the error, then its causes) that says which decides.
    """
    for e in _chain(error):
        reason = f"{type(e).__name__}: {first_line(e)}"
        status = _status(e)
        if isinstance(e, CheckpointDamagedError):
            return "damage", e.reason
        if isinstance(e, MemoryError) or status in MEMORY_STATUSES:
            return "out of memory", reason
        if isinstance(e, ImportError):
            return "a package is missing", reason
        if isinstance(e, (FileNotFoundError, NotADirectoryError, json.JSONDecodeError, UnicodeDecodeError)):
            return "damage", reason
        if isinstance(e, OSError):   # EIO, a timeout, a refused connection, no permission: not the files' fault
            return "an I/O error", reason
        if status in DAMAGE_STATUSES or any(phrase in str(e) for phrase in DAMAGE_PHRASES):
            return "damage", reason
        if status in IO_STATUSES:
            return "an I/O error", reason
    return None


FIXES = {
    "out of memory": "free memory on this host and its accelerators (another job may hold it) or restore on a "
                     "larger machine",
    "a package is missing": "install it",
    "an I/O error": "check the disk or bucket (the error may be transient)",
}


def read_error(step: int, directory, cause: str, reason: str) -> CheckpointReadError:
    return CheckpointReadError(
        f"could not read checkpoint step {step} in {directory}: {cause} ({reason}); nothing was moved: "
        f"{FIXES[cause]}, then rerun the same command")


def raise_classified(error: Exception, step: int, directory, damaged_fix: str = "") -> None:
    """Re-raise `error` as CheckpointDamagedError (whose message ends with `damaged_fix` when given),
    CheckpointReadError, or as it is (a bug keeps its traceback)."""
    verdict = classify(error)
    if verdict is None:
        raise error
    kind, reason = verdict
    if kind == "damage":
        raise CheckpointDamagedError(step, directory, reason, damaged_fix) from None
    raise read_error(step, directory, kind, reason) from None


def quiet_closed_loop_callbacks() -> None:
    """After a failed restore or save, TensorStore reads and writes still in flight complete into Orbax's event
    loop, which is closed by then; each completion reports `RuntimeError: Event loop is closed` as an
    unraisable exception (a traceback on stderr, often at exit, after the failure was already reported). Those
    are dropped by the hook installed here (once per process, before the first checkpoint is opened); every
    other unraisable exception passes to the previous hook."""
    if getattr(sys.unraisablehook, "drops_closed_loop_callbacks", False):
        return
    previous = sys.unraisablehook

    def hook(unraisable):
        error = unraisable.exc_value
        if isinstance(error, RuntimeError) and str(error) == "Event loop is closed":
            return
        previous(unraisable)

    hook.drops_closed_loop_callbacks = True
    sys.unraisablehook = hook
