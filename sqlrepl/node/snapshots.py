"""Serving a snapshot: a consistent, position-stamped, checksummed copy of the file."""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from ..core import snapshot, tempfiles
from ..core.positions import Position
from ..core.wire import EPOCH_HEADER, SEQ_HEADER, SHA256_HEADER, SNAPSHOT_TYPE
from . import metrics
from .database import Database

log = logging.getLogger("sqlrepl")
SEND_SIZE = 1 << 20


async def serve_snapshot(
    request: web.Request,
    db: Database,
    path: Path,
    on_taken: Callable[[Position], None] | None = None,
) -> web.StreamResponse:
    """Stream a consistent, position-stamped, checksummed copy of the database."""
    tmp = tempfiles.temp_path(path.with_name(f"{path.name}.snapshot-{id(request)}"))
    tmp.mkdir()
    started = time.monotonic()
    try:
        copy = tmp / "snapshot.db"
        where = await db.run(snapshot.take, db.conn, copy, time.time())
        if on_taken:
            on_taken(where)
        digest = await asyncio.to_thread(snapshot.sha256_file, copy)
        response = web.StreamResponse(
            headers={
                "Content-Type": SNAPSHOT_TYPE,
                EPOCH_HEADER: str(where.epoch),
                SEQ_HEADER: str(where.seq),
                SHA256_HEADER: digest,
            }
        )
        response.content_length = copy.stat().st_size
        await response.prepare(request)
        with open(copy, "rb") as f:
            while block := await asyncio.to_thread(f.read, SEND_SIZE):
                await response.write(block)
        await response.write_eof()
        size = copy.stat().st_size
        metrics.SNAPSHOTS.labels("out").inc()
        metrics.SNAPSHOT_SECONDS.labels("out").observe(time.monotonic() - started)
        metrics.SENT_BYTES.inc(size)
        log.info("served snapshot at %s (%d bytes)", where, size)
        return response
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
