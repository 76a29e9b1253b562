"""`GET /batch` on the leader: a long poll answered with a batch built while it is sent.

The batch is built on a read connection of its own (`builders`) inside one read
transaction and written to a `Spool`; the handler sends what the spool holds as it grows
(small batches whole, large ones streamed), so the read transaction lasts only as long
as the build, whatever the network does. A follower that hangs up stops its build.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from typing import Protocol

import apsw
from aiohttp import web

from ... import config
from ...core import batch, capture, internals, roles
from ...core.positions import Position
from ...core.requests import BatchRequest
from ...core.wire import (
    BATCH_TYPE,
    EPOCH_HEADER,
    FORK_HEADER,
    HEAD_HEADER,
    MEMBERS_HEADER,
    SETTINGS_HEADER,
    FrameWriter,
)
from ...errors import ProtocolError, SnapshotNeeded, SqlreplError
from .. import metrics
from ..configs import LeaderConfig
from ..database import Database
from ..http import error
from ..spool import Abandoned, Spool
from .builders import Builder, Builders
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

    @property
    def config(self) -> LeaderConfig: ...

    def lease_doubtful(self) -> bool: ...


log = logging.getLogger("sqlrepl.leader")

#: Batches up to this size are built in memory; larger ones spill to a temp file.
SPOOL_MEMORY = 4 << 20
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
        self.builders = Builders(leader.config.db)
        #: Frames are at most this long (`--frame-size`).
        self.frame_size = int(leader.config.frame_size)

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
        leader.followers.register(asked.node, asked.url, after, voter=asked.voter)
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
            SETTINGS_HEADER: leader.followers.sync.settings.dump(),
        }

    async def _build_and_send(
        self, request: web.Request, after: int, fts5: dict[str, str]
    ) -> web.StreamResponse:
        spool = Spool(asyncio.get_running_loop(), SPOOL_MEMORY)
        build = asyncio.ensure_future(self._build(after, spool, fts5))
        try:
            return await self._send(request, spool, build)
        except SnapshotNeeded as exc:
            return error(410, str(exc))
        except NotLeading as exc:
            return error(503, str(exc))
        except SchemaDeferred:
            return web.Response(status=204, headers=self.headers())
        except apsw.Error as exc:
            # An app dropped sqlrepl's tables mid-build (rebuilt by the next look), a
            # failing disk: the follower asks again.
            log.warning("a batch from seq %d could not be built: %s", after, exc)
            return error(503, f"the leader could not build the batch: {exc}")
        finally:
            if build.done():
                spool.close()
            else:
                spool.abandon()  # the answer is gone: the build stops at its next write
                build.add_done_callback(functools.partial(_closed, spool))

    async def close(self) -> None:
        await self.builders.close()

    async def _build(self, after: int, spool: Spool, fts5: dict[str, str]) -> None:
        """Build (after, head] into the spool, on a read connection of its own."""
        try:
            async with self.builders.lease() as builder:
                while True:
                    try:
                        await builder.db.run(self._build_on, builder, after, spool, fts5)
                        return
                    except batch.SchemaMoved:
                        if not await self.leader.db.run(self._catch_up):
                            raise SchemaDeferred() from None  # the change loop syncs it soon
        except Abandoned:
            pass  # nobody waits for this batch any more
        finally:
            spool.finish()

    def _build_on(self, builder: Builder, after: int, spool: Spool, fts5: dict[str, str]) -> None:
        """In the builder's thread."""
        out = FrameWriter(spool.write, self.frame_size)
        with metrics.BUILD_SECONDS.time():
            head = batch.build(builder.db.conn, after, out, builder.tables, fts5)
        metrics.CHANGES_SHIPPED.inc(max(head - after, 0))

    def _catch_up(self) -> bool:
        """In the leader's database thread: bring capture in step with the schema."""
        conn = self.leader.db.conn
        if capture.in_step(conn) is None:
            if internals.missing_internals(conn):
                return False  # an app dropped sqlrepl's tables: the next look rebuilds them
            raise NotLeading("this node handed over its leadership")
        return self.leader.schema.catch_up(conn)

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
        try:
            while True:
                finished = spool.finished
                if block := spool.read(sent, SEND_SIZE):
                    await response.write(block)
                    sent += len(block)
                elif finished:
                    break
                else:
                    await spool.changed()
            await build
        except ConnectionError:
            log.info("a follower hung up during a batch of %d bytes", spool.size)
            return response  # nobody to answer: the build stops (abandoned)
        except Exception as exc:
            # The build failed midway: cut the answer, so the follower applies none of it.
            log.warning("a batch failed midway (%s): its answer is cut", exc)
            if request.transport is not None:
                request.transport.abort()
            return response
        await response.write_eof()
        metrics.BATCHES_SHIPPED.inc()
        metrics.SENT_BYTES.inc(sent)
        return response


def _closed(spool: Spool, build: asyncio.Future[None]) -> None:
    """A build nobody waited for ended: free its spool, take its outcome (never logged as
    an unretrieved exception)."""
    spool.close()
    if not build.cancelled():
        build.exception()
