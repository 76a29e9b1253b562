"""One daemon per database file: an advisory lock on a file beside it.

`flock` locks belong to the open file: the kernel drops them when the daemon dies, however
it dies, so a crashed daemon never blocks its restart. The lock file holds the pid of the
daemon that has it, for the refusal message; it is never removed (removing it would let a
second daemon lock a new file of the same name).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from ..core import sidecars
from ..errors import ConfigError


def lock_path(db: Path) -> Path:
    return sidecars.beside(db, sidecars.LOCK)


@contextlib.contextmanager
def exclusive(db: Path) -> Iterator[None]:
    """Hold the lock of `db` for the block; refuse at once if another daemon holds it."""
    path = lock_path(db)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise ConfigError(f"cannot create the lock file {path}: {exc.strerror}") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise ConfigError(
                f"another sqlrepl daemon (pid {holder}) already runs on {db}; "
                "one daemon per database file"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
