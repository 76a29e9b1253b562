"""How fresh a follower's file is, proved beside it for apps that read the file directly.

The follower daemon keeps `DB.sqlrepl-fresh` (JSON, replaced atomically, at most every
`WRITE_EVERY` seconds while nothing changes): the last instant it knew its file held
everything its leader had, whether it knows itself behind now, and the keep-alive within
which its leader would have told it of a new change. `connect_follower(max_lag=…)` reads
it with no HTTP: a follower whose daemon stopped, or that lost its leader, ages.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

from ..core import sidecars

#: A caught-up follower rewrites its proof at most this often.
WRITE_EVERY = 0.1


def path_for(db: Path) -> Path:
    return sidecars.beside(db, sidecars.FRESH)


def lag_seconds(fresh_at: float | None, behind: bool, keepalive: float, now: float) -> float | None:
    """Seconds of changes a follower may miss: 0 while it was caught up at its last contact
    within one keep-alive; else the time since it last was (None: it never was)."""
    if fresh_at is None:
        return None
    age = max(now - fresh_at, 0.0)
    return 0.0 if not behind and age <= keepalive else round(age, 3)


class FreshnessFile:
    def __init__(self, db: Path, keepalive: float) -> None:
        self.path = path_for(db)
        self.keepalive = keepalive
        self._written: tuple[float, bool] | None = None

    def update(self, fresh_at: float | None, behind: bool) -> None:
        """Record what the follower knows now (written when it changed enough)."""
        if fresh_at is None:
            return
        last = self._written
        if last is not None and last[1] == behind and fresh_at - last[0] < WRITE_EVERY:
            return
        record = {"fresh_at": fresh_at, "behind": behind, "keepalive": self.keepalive}
        tmp = self.path.with_name(self.path.name + ".tmp")
        with contextlib.suppress(OSError):  # a full disk: the proof ages, as it should
            tmp.write_text(json.dumps(record))
            os.replace(tmp, self.path)
            self._written = (fresh_at, behind)


def read(db: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads(path_for(db).read_text()))
    except (OSError, ValueError):
        return None


def file_lag(db: Path, now: float | None = None) -> float | None:
    """The lag in seconds a follower's file can be proved to have (None: no proof)."""
    record = read(db)
    if record is None:
        return None
    now = time.time() if now is None else now
    return lag_seconds(
        record.get("fresh_at"), bool(record.get("behind")), float(record["keepalive"]), now
    )
