"""A leader's disk: probed regularly; a full one gives up its reserve to close the gate.

While the probe fails (full, read-only, I/O errors) the HA loop steps down and does not
lead, and status says why. A full disk may still take an app's small commit (SQLite
reuses WAL space) while the gate's own write, a few schema pages, fails: the leader keeps
space in reserve beside its file and frees it to close the gate.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import apsw

from .. import config
from ..core import tempfiles
from ..errors import StorageError

if TYPE_CHECKING:
    from .leader import Leader

log = logging.getLogger("sqlrepl.leader")


async def watch(leader: Leader) -> None:
    """Probe the database's disk (and keep the reserve); set `leader.disk_error`."""
    db = leader.config.db
    while True:
        problem = await asyncio.to_thread(tempfiles.probe_writable, db)
        if problem is None:
            problem = await asyncio.to_thread(tempfiles.make_reserve, db)
        if problem != leader.disk_error:
            if problem:
                log.error("%s: this leader cannot take writes", problem)
            else:
                log.warning("the disk of %s takes writes again", db)
            leader.disk_error = problem
        await asyncio.sleep(config.DISK_CHECK_INTERVAL)


async def close_gate_on_a_full_disk(leader: Leader, reason: str) -> None:
    """Free the reserve and close the gate. If it still fails, the lease is kept (no
    second leader while apps may still commit here) and the next HA cycle tries again."""
    db = leader.config.db
    freed = await asyncio.to_thread(tempfiles.free_reserve, db)
    log.error("the disk of %s is full%s", db, ": reserve freed" if freed else "")
    try:
        await leader.set_gate(False, f"this node is no longer the leader: {reason}")
    except apsw.FullError as exc:
        raise StorageError(
            f"write gate NOT closed: {db}'s disk is full; keeping the lease so that no "
            "other node takes writes while apps may still commit here"
        ) from exc
