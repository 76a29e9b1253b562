"""Applying one batch as it arrives: small ones read whole and applied in one step, large
(or streamed) ones block by block while the next block arrives, committed once. The
archive's recorder, if any, is fed the same bytes."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import aiohttp
import apsw

from ...core.apply import Applier
from ...core.positions import Position
from ...errors import ApplyError, ProtocolError, StorageError, Unappliable
from .. import metrics
from ..database import Database
from .archive import Recorder

log = logging.getLogger("sqlrepl.follower")

#: Bodies up to this size are read whole and applied in one step.
SMALL_BATCH = 4 << 20
#: Larger (or streamed) batches are applied block by block as they arrive.
STREAM_BLOCK = 1 << 20


def learned(applier: Applier) -> tuple[list[Any] | None, bool]:
    """What an applied batch tells: the leader's epoch history (None: not sent), and
    whether FTS5 indexes moved (their fingerprints must be read again)."""
    header = applier.header
    if header is None:
        return None, False
    fts5_moved = any(shape.fts5 for shape in header.tables.values())
    return header.history, header.schema is not None or fts5_moved


def storage_problem(exc: BaseException, db: Path) -> StorageError:
    """A full or failing disk, in one line."""
    if isinstance(exc, StorageError):
        return exc
    why = getattr(exc, "strerror", None) or exc
    return StorageError(f"cannot write beside {db}: {why}")


def failure(exc: BaseException, before: Position | None) -> Exception | None:
    """What a failed apply means to the replication loop: a transfer that broke off
    (ProtocolError: retried), a whole batch this file refuses (Unappliable: retried, then
    given up for a snapshot), or what it raised (None)."""
    if isinstance(exc, aiohttp.ClientPayloadError):
        return ProtocolError(f"batch transfer broke off: {exc}")
    refused = type(exc) is ProtocolError or (
        isinstance(exc, ApplyError) and not isinstance(exc.__cause__, apsw.BusyError)
    )
    if refused:
        return Unappliable(f"the batch from seq {before.seq if before else '?'}: {exc}")
    return None


async def apply(
    db: Database, applier: Applier, response: aiohttp.ClientResponse, recorder: Recorder | None
) -> Position:
    """Apply the batch `response` carries in one transaction; the position it reaches.
    On failure the caller aborts the applier (nothing of the batch is kept)."""
    started = time.perf_counter()
    where = await _apply(db, applier, response, recorder)
    metrics.APPLY_SECONDS.observe(time.perf_counter() - started)
    metrics.BATCHES_APPLIED.inc()
    metrics.ROWS_APPLIED.inc(applier.rows)
    metrics.RECEIVED_BYTES.inc(response.content_length or 0)
    return where


async def _apply(
    db: Database, applier: Applier, response: aiohttp.ClientResponse, recorder: Recorder | None
) -> Position:
    size = response.content_length
    if recorder:
        recorder.begin()
    if size is not None and size <= SMALL_BATCH:
        body = await response.read()
        if len(body) != size:
            raise ProtocolError("batch is truncated")
        if recorder:
            recorder.feed(body)
        return await db.run(_apply_whole, applier, body)
    where = await _apply_streamed(db, applier, response, recorder)
    log.info("applied a large batch: %d rows, now at %s", applier.rows, where)
    return where


async def _apply_streamed(
    db: Database, applier: Applier, response: aiohttp.ClientResponse, recorder: Recorder | None
) -> Position:
    """Apply each block while the next one arrives; commit at the end."""
    applying: asyncio.Future[None] | None = None
    try:
        async for block in response.content.iter_chunked(STREAM_BLOCK):
            if applying is not None:
                await applying
            applying = asyncio.ensure_future(db.run(applier.feed, block))
            if recorder:
                recorder.feed(block)
        if applying is not None:
            await applying
    finally:
        if applying is not None and not applying.done():
            await asyncio.wait({applying})
    return await db.run(applier.finish)


def _apply_whole(applier: Applier, body: bytes) -> Position:
    applier.feed(body)
    return applier.finish()
