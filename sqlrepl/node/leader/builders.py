"""The read connections that build batches: one thread each, apart from the leader's own.

A batch is built inside one read transaction, and a large one (a multi-GiB transaction)
takes a while. Built on the leader's database thread it would hold up every other
follower's batch, and the leader's own work (capture, the gate) behind it. Each build
here borrows a connection of its own (WAL readers never block each other), with the
table shapes it has read before.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from ...core import batch
from ...core.db import connect
from ..database import Database

#: Batches built at the same time; more requests wait for a free connection.
BUILDERS = 4


class Builder:
    """One read connection, its thread, and the table shapes it has read."""

    def __init__(self, path: Path) -> None:
        conn = connect(path)
        conn.execute("PRAGMA query_only = 1")
        self.db = Database(conn)
        self.tables = batch.TableCache()


class Builders:
    def __init__(self, path: Path, size: int = BUILDERS) -> None:
        self._path = path
        self._idle: list[Builder] = []
        self._slots = asyncio.Semaphore(size)
        self._closed = False

    @contextlib.asynccontextmanager
    async def lease(self) -> AsyncIterator[Builder]:
        """A builder for one batch (waits while all of them build)."""
        async with self._slots:
            builder = self._idle.pop() if self._idle else None
            if builder is None:
                builder = await asyncio.to_thread(Builder, self._path)
            try:
                yield builder
            finally:
                if self._closed:
                    await asyncio.to_thread(builder.db.close)
                else:
                    self._idle.append(builder)

    async def close(self) -> None:
        """Close the idle connections; those still building close when they finish."""
        self._closed = True
        idle, self._idle = self._idle, []
        for builder in idle:
            await asyncio.to_thread(builder.db.close)
