"""Temporary files beside their target, named after the process that writes them.

Every temporary file or directory sqlrepl makes (a snapshot being written or served, a
download, a restore) is `.<target>.<pid>.sqlrepl-tmp`, beside its target so that the final
rename is atomic. A process killed with -9 cannot remove its own; the next daemon started
on that database, and the next `snapshot` or `restore` into that directory, remove those
whose process is gone. They never match a snapshot's name, so retention never counts them.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

SUFFIX = ".sqlrepl-tmp"
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
