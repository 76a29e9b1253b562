"""Temporary files beside their target, named after the process that writes them.

Every temporary file or directory sqlrepl makes (a snapshot being written or served, a
download, a restore) is `.<target>.<pid>.sqlrepl-tmp`, beside its target so that the final
rename is atomic. A process killed with -9 cannot remove its own; the next daemon started
on that database, and the next `snapshot` or `restore` into that directory, remove those
whose process is gone. They never match a snapshot's name, so retention never counts them.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from pathlib import Path

from . import sidecars

SUFFIX = sidecars.TEMP
_NAME = re.compile(r"^\.(?P<target>.+)\.(?P<pid>\d+)" + re.escape(SUFFIX) + "$")


def temp_path(target: Path) -> Path:
    """Where this process writes `target` before renaming it into place."""
    return target.parent / f".{target.name}.{os.getpid()}{SUFFIX}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale(directory: Path, target: str | None = None) -> list[Path]:
    """Remove the temporary files and directories in `directory` (only those of targets
    named `target…`, if given) whose writing process is gone; return what was removed."""
    removed: list[Path] = []
    try:
        entries = list(directory.iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = _NAME.match(entry.name)
        if not match or (target is not None and not match["target"].startswith(target)):
            continue
        if _alive(int(match["pid"])):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


#: What the disk probe writes: one page, enough to need a new block.
PROBE_SIZE = 4096


def probe_writable(target: Path) -> str | None:
    """Can the directory of `target` take a new, durable block now? None if it can, else
    why not ("No space left on device", "Read-only file system", an I/O error). Writes,
    syncs and removes a temporary file; SQLite may still commit into space it holds, but
    a disk that fails this is failing."""
    # A fixed name, not a temp file's: one left by a killed process is simply reused.
    probe = target.with_name(f".{target.name}{sidecars.PROBE}")
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, b"\0" * PROBE_SIZE)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        return f"cannot write to {target.parent}: {exc.strerror or exc}"
    finally:
        with contextlib.suppress(OSError):
            probe.unlink(missing_ok=True)
    return None


#: Space a leader keeps in reserve beside its database (`DB.sqlrepl-reserve`): freed when
#: the disk fills up, so that closing the write gate (a few schema pages) succeeds even
#: where an app's small commit still would.
RESERVE_SIZE = 4 << 20


def reserve_path(db: Path) -> Path:
    return sidecars.beside(db, sidecars.RESERVE)


def make_reserve(db: Path) -> str | None:
    """Allocate the reserve file if it is missing; None, or why it could not be."""
    path = reserve_path(db)
    if path.exists() and path.stat().st_size >= RESERVE_SIZE:
        return None
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.posix_fallocate(fd, 0, RESERVE_SIZE)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)
        return f"cannot reserve space beside {db}: {exc.strerror or exc}"
    return None


def free_reserve(db: Path) -> bool:
    """Give the reserve's space back to the disk; True if there was one."""
    try:
        reserve_path(db).unlink()
    except OSError:
        return False
    return True
