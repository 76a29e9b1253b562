"""A leader's disk: probed regularly, with space kept in reserve to close the gate.

While the probe fails (full, read-only, I/O errors) the leader is not writable, the HA
loop steps down and does not lead, and status says why. A full disk may still take an
app's small commit (SQLite reuses WAL space) while the gate's own write, a few schema
pages, fails: the leader keeps space in reserve beside its file and frees it to close
the gate (`WriteGate.close_for_good`).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from ... import config
from ...core import tempfiles

log = logging.getLogger("sqlrepl.leader")


class DiskProbe:
    """Owns what is known of the disk under `db`: `error` (None: it takes writes)."""

    def __init__(self, db: Path) -> None:
        self._db = db
        self._error: str | None = None

    @property
    def error(self) -> str | None:
        return self._error

    async def check(self) -> str | None:
        """Probe once (and keep the reserve); log a change; return the error."""
        problem = await asyncio.to_thread(tempfiles.probe_writable, self._db)
        if problem is None:
            problem = await asyncio.to_thread(tempfiles.make_reserve, self._db)
        if problem != self._error:
            if problem:
                log.error("%s: this leader cannot take writes", problem)
            else:
                log.warning("the disk of %s takes writes again", self._db)
            self._error = problem
        return problem

    async def watch(self) -> None:
        while True:
            await self.check()
            await asyncio.sleep(config.DISK_CHECK_INTERVAL)

    async def free_reserve(self) -> bool:
        return await asyncio.to_thread(tempfiles.free_reserve, self._db)
