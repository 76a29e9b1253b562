"""The daemon's connection to its file, used from one thread of its own; writing to a
file apps keep busy."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import apsw

from .. import config
from ..core import gate

log = logging.getLogger("sqlrepl.leader")
T = TypeVar("T")


class Database:
    """One apsw connection, used only from its own thread: `await db.run(fn, *args)`."""

    def __init__(self, conn: apsw.Connection) -> None:
        self.conn = conn
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlrepl-db")

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` in the database thread, in the caller's context (its log context)."""
        context = contextvars.copy_context()
        call = functools.partial(context.run, fn, *args)
        return await asyncio.get_running_loop().run_in_executor(self._pool, call)

    def close(self) -> None:
        self._pool.submit(self.conn.close).result()
        self._pool.shutdown()


def patiently(fn: Callable[[], T], db: Path) -> T:
    """Run `fn`, retrying with backoff for as long as apps keep the file's write lock:
    SQLite has no fair lock queue, so an app writing in a tight loop can win every race
    for a while, but a daemon must never exit because apps are busy. (Only a start that
    has something to install writes at all.)"""
    delay = config.BACKOFF_MIN
    attempt = 0
    while True:
        attempt += 1
        try:
            return fn()
        except apsw.BusyError:
            log.warning("%s is busy (attempt %d); retrying in %.1fs", db, attempt, delay)
            time.sleep(delay)
            delay = min(delay * 2, config.BACKOFF_MAX)


def close_gate_first(conn: apsw.Connection, reason: str) -> None:
    """Close the gate, polling for the write lock every millisecond for a while: apps'
    busy handlers back off up to 100 ms between tries, so when an app holding the lock
    lets go, the gate takes it before another app's waiting write does."""
    give_up = time.monotonic() + config.GATE_CLOSE_PATIENCE

    def busy(_attempts: int) -> bool:
        time.sleep(0.001)
        return time.monotonic() < give_up

    conn.set_busy_handler(busy)
    try:
        gate.close(conn, reason)
    finally:
        conn.set_busy_timeout(config.BUSY_TIMEOUT_MS)
