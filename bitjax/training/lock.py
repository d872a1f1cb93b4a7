"""One trainer per run directory: a lock file holding the owner's pid and host.

Two trainers in one workdir would delete each other's checkpoints and interleave their metrics, so
`bitjax train` takes `RunPaths.lock` (train.lock) before it reads or writes anything there, and removes it
when it ends. A lock left by a killed process is stale when it names this host and a pid that no longer
exists here; it is then replaced. A lock from another host cannot be checked from here, so it is refused
with the fix. On a multi-host run process 0 alone takes the lock (the workdir is shared).

On a bucket (gs://) there is no exclusive create through the filesystem layer, so the lock is a best
effort: an existing live lock is refused as above, then the lock object is written and read back, and a
different owner read back (a trainer that wrote in the same instant) is refused. Two trainers started within
the same second can still both pass; Orbax's own step directories are not protected against that.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time

from etils import epath

from bitjax.errors import ConfigError
from bitjax.paths import is_remote


class WorkdirLockedError(ConfigError):
    """Another live `bitjax train` holds the run directory."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _read(path: epath.Path) -> dict | None:
    """The lock's owner, or None when the file is unreadable (a lock torn by a kill while it was written)."""
    try:
        owner = json.loads(path.read_text())
        return owner if isinstance(owner, dict) and isinstance(owner.get("pid"), int) else None
    except (OSError, ValueError):
        return None


def _age(path: epath.Path) -> float:
    """Seconds since the lock was written (local locks only: the exclusive-create path)."""
    try:
        return time.time() - os.stat(path).st_mtime
    except FileNotFoundError:
        return float("inf")


def _is_stale(owner: dict | None) -> bool:
    if owner is None:
        return True
    return owner.get("host") == socket.gethostname() and not _pid_alive(owner["pid"])


def _refuse(owner: dict, path: epath.Path, what: str) -> WorkdirLockedError:
    return WorkdirLockedError(
        f"{what} is in use by another bitjax train (pid {owner['pid']} on host {owner['host']}, lock "
        f"{path}); wait for it to end or stop it, or pass another --workdir. If that process is gone, "
        f"delete {path}")


def _acquire_remote(path: epath.Path, what: str, record: str) -> None:
    """The best-effort lock on an object store (see the module docstring)."""
    try:
        owner = _read(path) if path.exists() else None
        if owner is not None and not _is_stale(owner):
            raise _refuse(owner, path, what)
        path.write_text(record)
        back = _read(path)
    except OSError as e:
        raise ConfigError(f"cannot write the lock file {path} ({e}); check the bucket's permissions "
                          "or pass another --workdir") from None
    if back != json.loads(record):
        raise _refuse(back or {"pid": "?", "host": "?"}, path, what)


def acquire(path: epath.Path, what: str) -> None:
    """Create `path` exclusively for this process, replacing a stale lock; refuse a live one in one line."""
    record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()})
    if is_remote(path):
        _acquire_remote(path, what, record)
        return
    for _ in range(10):   # a stale lock is removed and the exclusive create tried again
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            owner = _read(path)
            if owner is None and _age(path) < 2.0:   # another process may be writing it this instant
                time.sleep(0.5)
                continue
            if not _is_stale(owner):
                raise _refuse(owner, path, what) from None
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            continue
        except OSError as e:   # a read-only or full file system: nothing can be trained into this workdir
            raise ConfigError(f"cannot write the lock file {path} ({e.strerror}); make {path.parent} writable "
                              "or pass another --workdir") from None
        with os.fdopen(fd, "w") as f:
            f.write(record)
        return
    raise WorkdirLockedError(f"could not take the lock {path} (another process keeps taking it); "
                             f"pass another --workdir")


def release(path: epath.Path) -> None:
    """Remove the lock if this process owns it."""
    owner = _read(path)
    if owner is not None and owner.get("pid") == os.getpid() and owner.get("host") == socket.gethostname():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def held(path: epath.Path, what: str, enabled: bool = True):
    """Hold the lock for the block (`enabled=False`: a process other than 0 of a multi-host run)."""
    if not enabled:
        yield
        return
    acquire(path, what)
    try:
        yield
    finally:
        release(path)
