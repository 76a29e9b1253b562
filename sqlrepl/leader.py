"""The leader daemon: capture in step with the schema, batches and snapshots over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from . import batch, capture
from .db import connect, read_meta, use_wal
from .errors import SnapshotNeeded
from .spool import Spool
from .watch import DatabaseWatcher
from .web import (
    Database,
    auth_middleware,
    error,
    int_param,
    json_param,
    run_server,
    serve_snapshot,
)
from .wire import FrameWriter

log = logging.getLogger("sqlrepl.leader")

#: Longest a follower may hold a batch request open waiting for changes.
MAX_WAIT = 60.0
#: Batches up to this size are built in memory; larger ones spill to a temp file.
SPOOL_MEMORY = 8 << 20
#: A batch still being built once it reaches this size starts streaming (chunked).
STREAM_AFTER = 1 << 20
SEND_SIZE = 1 << 20
#: A fallback check for changes, for file systems that send no events.
RECHECK_INTERVAL = 5.0


@dataclass
class LeaderConfig:
    db: Path
    host: str
    port: int
    token: str | None = None
    trim_interval: float = 10.0
    retention: float = 24 * 3600.0


class Leader:
    def __init__(self, config: LeaderConfig) -> None:
        self.config = config
        self.url = f"http://{config.host}:{config.port}"
        conn = connect(config.db)
        use_wal(conn)
        self.position = capture.install(conn)
        self.meta = read_meta(conn)
        self.db = Database(conn)
        self.head = self.position.seq
        self.changed = asyncio.Condition()
        self.followers: dict[str, tuple[str, int, float]] = capture.remember_followers(conn, {}, 0)
        self.watcher = DatabaseWatcher(config.db)
        self.stopping = False
        self.tables = batch.TableCache()
        #: What the schema holds that sqlrepl cannot replicate (logged and in /status).
        self.problems: list[str] = []

    def app(self) -> web.Application:
        app = web.Application(middlewares=[auth_middleware(self.config.token)])
        app.router.add_get("/status", self.status)
        app.router.add_get("/batch", self.batch)
        app.router.add_get("/snapshot", self.snapshot)
        return app

    async def run(self, stop: asyncio.Event) -> None:
        await self.db.run(self._report_problems)
        log.info(
            "leading %s on %s: cluster %s, epoch %s, seq %s",
            self.config.db,
            self.url,
            self.meta["cluster"],
            self.position.epoch,
            self.head,
        )
        self.watcher.start()
        tasks = [
            asyncio.create_task(self._follow_changes()),
            asyncio.create_task(self._release_waiters(stop)),
        ]
        if self.config.trim_interval > 0:
            tasks.append(asyncio.create_task(self._trim_loop()))
        try:
            await run_server(self.app(), self.config.host, self.config.port, stop)
        finally:
            for task in tasks:
                task.cancel()
            self.watcher.stop()
            self.db.close()
            log.info("leader stopped")

    async def _release_waiters(self, stop: asyncio.Event) -> None:
        """On shutdown, answer every held batch request at once."""
        await stop.wait()
        self.stopping = True
        async with self.changed:
            self.changed.notify_all()

    async def _follow_changes(self) -> None:
        """On every file event: keep capture in step with the schema, publish the new head."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.watcher.dirty.wait(), RECHECK_INTERVAL)
            self.watcher.dirty.clear()
            await self.refresh()

    async def refresh(self) -> int:
        top = await self.db.run(self._sync_and_head)
        if top != self.head:
            self.head = top
            async with self.changed:
                self.changed.notify_all()
        return top

    def _sync_and_head(self) -> int:
        if capture.sync_capture(self.db.conn):
            log.info("schema changed: capture re-synced")
            self._report_problems()
        return capture.head(self.db.conn)

    def _report_problems(self) -> None:
        """Say loudly, after every schema sync, what cannot be replicated."""
        self.problems = capture.problems(self.db.conn)
        for problem in self.problems:
            log.error("%s", problem)

    async def _trim_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.trim_interval)
            try:
                await self.trim()
            except Exception:
                log.exception("log trim failed")

    async def trim(self) -> int:
        forget = time.time() - self.config.retention
        kept = await self.db.run(capture.remember_followers, self.db.conn, self.followers, forget)
        self.followers = kept
        upto = min((seq for _url, seq, _seen in kept.values()), default=self.head)
        return await self.db.run(capture.trim, self.db.conn, upto)

    def _register(self, request: web.Request, seq: int) -> None:
        node = request.query.get("node")
        if node:
            self.followers[node] = (request.query.get("url", ""), seq, time.time())

    async def status(self, request: web.Request) -> web.Response:
        now = time.time()
        followers = [
            {
                "node": node,
                "url": url,
                "seq": seq,
                "lag": max(self.head - seq, 0),
                "last_seen": round(now - seen, 3),
            }
            for node, (url, seq, seen) in sorted(self.followers.items())
        ]
        return web.json_response(
            {
                "role": "leader",
                "url": self.url,
                "db": str(self.config.db),
                "cluster": self.meta["cluster"],
                "epoch": self.position.epoch,
                "seq": self.head,
                "followers": followers,
                "problems": self.problems,
                "error": "; ".join(self.problems) or None,
            }
        )

    async def batch(self, request: web.Request) -> web.StreamResponse:
        after = int_param(request, "after")
        epoch = int_param(request, "epoch", 0)
        wait = min(max(float(int_param(request, "wait", 0)), 0.0), MAX_WAIT)
        if epoch > self.position.epoch:
            return error(
                409,
                f"follower accepted epoch {epoch}, newer than this leader's {self.position.epoch}",
            )
        self._register(request, after)
        if after == self.head and wait > 0:
            await self._wait_past(after, wait)
        if after == self.head:
            return web.Response(status=204, headers=self._headers())
        if request.transport is None or request.transport.is_closing():
            return web.Response(status=204)  # the follower hung up while waiting: build nothing
        fts5 = json_param(request, "fts5")
        spool = Spool(asyncio.get_running_loop(), SPOOL_MEMORY)
        build = asyncio.ensure_future(self.db.run(self._build, after, spool, fts5))
        try:
            return await self._send(request, spool, build)
        except SnapshotNeeded as exc:
            return error(410, str(exc))
        finally:
            if build.done():
                spool.close()
            else:
                build.add_done_callback(lambda _: spool.close())

    async def _wait_past(self, after: int, wait: float) -> None:
        async with self.changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self.changed.wait_for(lambda: self.head != after or self.stopping), wait
                )

    def _build(self, after: int, spool: Spool, fts5: dict[str, str]) -> None:
        try:
            while True:
                try:
                    out = FrameWriter(spool.write)
                    batch.build(self.db.conn, after, out, self.tables, fts5)
                    return
                except batch.SchemaMoved:
                    capture.sync_capture(self.db.conn)
                    self._report_problems()
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
        response = web.StreamResponse(headers=self._headers())
        response.content_type = "application/x-sqlrepl-batch"
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
        return response

    def _headers(self) -> dict[str, str]:
        return {"X-Sqlrepl-Head": str(self.head), "X-Sqlrepl-Epoch": str(self.position.epoch)}

    async def snapshot(self, request: web.Request) -> web.StreamResponse:
        return await serve_snapshot(
            request, self.db, self.config.db, lambda where: self._register(request, where.seq)
        )
