"""The members a node knows, kept in a small file beside its database.

Static coordination has no shared registry, so each node remembers the URLs it has seen
(its leader's, its followers', those its leader told it of) in `DB.sqlrepl-members`: a
daemon restarted on its file can then ask them who leads now. The file is written only
when the set grows (rarely), atomically, and never inside the app's database.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from ..core import sidecars

log = logging.getLogger("sqlrepl")


def members_path(db: Path) -> Path:
    return sidecars.beside(db, sidecars.MEMBERS)


class Members:
    def __init__(self, db: Path, me: str) -> None:
        self.path = members_path(db)
        self.me = me
        self.urls: set[str] = set()
        with contextlib.suppress(OSError, ValueError, TypeError):  # none known yet
            self.urls = {str(u) for u in json.loads(self.path.read_text()) if u}

    def others(self) -> set[str]:
        return self.urls - {self.me}

    def add(self, urls: Iterable[str]) -> None:
        """Remember `urls`; the file is rewritten only when something is new."""
        new = {u.rstrip("/") for u in urls if u} - self.urls
        if not new:
            return
        self.urls |= new
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            tmp.write_text(json.dumps(sorted(self.urls)))
            os.replace(tmp, self.path)
        except OSError as exc:  # a convenience: failover works without it
            log.warning("cannot record the cluster's members in %s: %s", self.path, exc)
