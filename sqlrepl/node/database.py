"""The daemon's connection to its file, used from one thread of its own."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import apsw

T = TypeVar("T")


class Database:
    """One apsw connection, used only from its own thread: `await db.run(fn, *args)`."""

    def __init__(self, conn: apsw.Connection) -> None:
        self.conn = conn
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlrepl-db")

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def close(self) -> None:
        self._pool.submit(self.conn.close).result()
        self._pool.shutdown()
