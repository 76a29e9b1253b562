"""`GET /batch` on the leader: a long poll answered with a batch built while it is sent.

The batch is built in the database thread inside one read transaction and written to a
`Spool`; the handler sends what the spool holds as it grows (small batches whole, large
ones streamed), so the read transaction lasts only as long as the build, whatever the
network does.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Protocol

from aiohttp import web

from ... import config
from ...core import batch, capture, roles
from ...core.positions import Position
from ...core.requests import BatchRequest
from ...core.wire import (
    BATCH_TYPE,
    EPOCH_HEADER,
    FORK_HEADER,
    HEAD_HEADER,
    MEMBERS_HEADER,
    FrameWriter,
)
from ...errors import ProtocolError, SnapshotNeeded, SqlreplError
from .. import metrics
from ..database import Database
from ..http import error
from ..spool import Spool
from .ddl import SchemaSync
from .gate import Leadership
from .head import LogHead
from .retention import Retention


class BatchSource(Protocol):
    """What serving batches asks of the leader."""

    @property
    def url(self) -> str: ...

    head: LogHead
    leadership: Leadership
    followers: Retention
    schema: SchemaSync
    db: Database

    def lease_doubtful(self) -> bool: ...


#: Batches up to this size are built in memory; larger ones spill to a temp file.
SPOOL_MEMORY = 8 << 20
#: A batch still being built once it reaches this size starts streaming (chunked).
STREAM_AFTER = 1 << 20
SEND_SIZE = 1 << 20


class NotLeading(SqlreplError):
    """A batch was asked of a node that is no longer the leader."""


class SchemaDeferred(SqlreplError):
    """The schema changed and capture waits for a quiet moment: nothing to send yet."""


class BatchServer:
    def __init__(self, leader: BatchSource) -> None:
        self.leader = leader
        self.tables = batch.TableCache()

    async def batch(self, request: web.Request) -> web.StreamResponse:
        leader = self.leader
        try:
            asked = BatchRequest.parse(request.query)
        except ProtocolError as exc:
            return error(400, str(exc))
        after, epoch = asked.after, asked.epoch
        wait = min(max(float(asked.wait), 0.0), config.MAX_POLL_WAIT)
        mine = leader.head.epoch
        if not leader.leadership.leading or leader.lease_doubtful():
            return error(503, "this node is not the leader now (no valid lease)")
        if epoch > mine:
            return error(409, f"follower accepted epoch {epoch}, newer than this leader's {mine}")
        fork = roles.fork_reason(leader.head.history, Position(epoch, after), asked.epoch_url)
        if fork:
            return error(410, f"follower at {epoch}/{after} {fork}", {FORK_HEADER: "1"})
        leader.followers.register(asked.node, asked.url, after)
        if not asked.archive:  # an archive is no replica: no acks from it
            # `after` is in the follower's file: an acknowledgement
            leader.followers.acks.pulled(asked.node, asked.url, after, leader.head.seq)
        with leader.followers.acks.waiting(asked.node):
            if leader.schema.deferral.pending and wait > 0:
                # Capture waits for a quiet moment to catch up with the schema: wait for it
                # within the poll's time (the follower takes a longer silence for a dead link).
                started = time.monotonic()
                await leader.head.wait_past(leader.head.seq, wait)
                wait = max(0.0, wait - (time.monotonic() - started))
            if after == leader.head.seq and wait > 0 and epoch >= mine:
                # (A follower still on an older epoch gets its answer at once: it accepts
                # this leader's epoch without waiting for the next change.)
                await leader.head.wait_past(after, wait)
        if after == leader.head.seq:
            return web.Response(status=204, headers=self.headers())
        if request.transport is None or request.transport.is_closing():
            return web.Response(status=204)  # the follower hung up while waiting: build nothing
        return await self._build_and_send(request, after, asked.fts5)

    def headers(self) -> dict[str, str]:
        leader = self.leader
        members = [leader.url, *sorted(leader.followers.members.others())]
        return {
            HEAD_HEADER: str(leader.head.seq),
            EPOCH_HEADER: str(leader.head.epoch),
            MEMBERS_HEADER: json.dumps([m for m in members if m]),
        }

    async def _build_and_send(
        self, request: web.Request, after: int, fts5: dict[str, str]
    ) -> web.StreamResponse:
        spool = Spool(asyncio.get_running_loop(), SPOOL_MEMORY)
        build = asyncio.ensure_future(self.leader.db.run(self._build, after, spool, fts5))
        try:
            return await self._send(request, spool, build)
        except SnapshotNeeded as exc:
            return error(410, str(exc))
        except NotLeading as exc:
            return error(503, str(exc))
        except SchemaDeferred:
            return web.Response(status=204, headers=self.headers())
        finally:
            if build.done():
                spool.close()
            else:
                build.add_done_callback(lambda _: spool.close())

    def _build(self, after: int, spool: Spool, fts5: dict[str, str]) -> None:
        """In the database thread: build (after, head] into the spool."""
        leader = self.leader
        try:
            while True:
                try:
                    out = FrameWriter(spool.write)
                    with metrics.BUILD_SECONDS.time():
                        head = batch.build(leader.db.conn, after, out, self.tables, fts5)
                    metrics.CHANGES_SHIPPED.inc(max(head - after, 0))
                    return
                except batch.SchemaMoved:
                    if capture.in_step(leader.db.conn) is None:
                        raise NotLeading("this node handed over its leadership") from None
                    if not leader.schema.catch_up(leader.db.conn):
                        raise SchemaDeferred() from None  # the change loop syncs it soon
        finally:
            spool.finish()

    async def _send(
        self, request: web.Request, spool: Spool, build: asyncio.Future[None]
    ) -> web.StreamResponse:
        """Send the batch while it is being built: small ones whole, large ones streamed."""
        while not spool.finished and spool.size < STREAM_AFTER:
            await spool.changed()
        if spool.finished:
            await build  # raises what the build raised, before any byte is sent
        response = web.StreamResponse(headers=self.headers())
        response.content_type = BATCH_TYPE
        if spool.finished:
            response.content_length = spool.size
        await response.prepare(request)
        sent = 0
        while True:
            finished = spool.finished
            if block := spool.read(sent, SEND_SIZE):
                await response.write(block)
                sent += len(block)
            elif finished:
                break
            else:
                await spool.changed()
        await build  # a build that failed midway aborts the response: the follower sees it cut
        await response.write_eof()
        metrics.BATCHES_SHIPPED.inc()
        metrics.SENT_BYTES.inc(sent)
        return response
