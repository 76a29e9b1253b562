"""Every file sqlrepl writes beside a database is named in one place and ignored by git."""

from __future__ import annotations

import fnmatch
from pathlib import Path

from sqlrepl.core import sidecars

ROOT = Path(__file__).resolve().parents[2]


def test_every_sidecar_is_ignored_by_git() -> None:
    """A checkout where a node ran commits none of its sidecars (nor the database)."""
    patterns = [
        line.strip()
        for line in (ROOT / ".gitignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    db = Path("app.db")
    names = [sidecars.beside(db, suffix).name for suffix in sidecars.ALL]
    names += [
        sidecars.rollback(db, 2, 41, 1e9).name,
        sidecars.fork_copy(db, 2, 41, 1e9).name,
        ".app.db.123.sqlrepl-tmp",
        "app.db.sqlrepl-download.json",
        "app.db",
        "app.db-wal",
    ]
    for name in names:
        assert any(fnmatch.fnmatch(name, p) for p in patterns), f"{name} is not in .gitignore"
