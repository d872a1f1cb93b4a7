"""Every error bitjax raises for a user to act on, under one base class.

The command line catches exactly `BitjaxError`: it prints the message as one line and exits with status 2.
Anything else that escapes is a bug in bitjax and keeps its traceback. Each message names the file,
field or value at fault and the fix.
"""

from __future__ import annotations

import sys

_WARNED: set[str] = set()


def warn_once(message: str) -> None:
    """One line on stderr, `bitjax: warning: ...`, at most once per process: bitjax chose a slower or weaker
    path than the config asked for, and the run goes on."""
    if message not in _WARNED:
        _WARNED.add(message)
        print(f"bitjax: warning: {' '.join(message.split())}", file=sys.stderr, flush=True)


def first_line(e: BaseException) -> str:
    """The first line of a library's exception message (at most 200 characters), to quote inside one of ours."""
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


class BitjaxError(Exception):
    """Base class: a one-line, user-facing reason a command cannot go on, naming the fix."""


class ConfigError(BitjaxError, ValueError):
    """A recipe, an override, a command-line value or a run directory that cannot be used."""


class DataError(ConfigError):
    """Bad input data: names the file (and line or record) and how to fix it."""


class TraceError(DataError):
    """A teacher-trace file that cannot be used; names the file, the line and the fix."""


class CacheError(BitjaxError, ValueError):
    """A teacher top-k cache that cannot be used as it is; names the file, the record and the fix."""


class ExportError(BitjaxError, ValueError):
    """An export that cannot be done (unsupported model, existing output, failed read-back check)."""


class TrainingError(BitjaxError, RuntimeError):
    """The run stopped for a reason the user must act on (a diverged loss, ...)."""
