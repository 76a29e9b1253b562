"""The leader daemon: capture in step with the schema, batches and snapshots over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import apsw
from aiohttp import web

from . import batch, capture, ha, roles
from .client import Client
from .coordinator import Etcd
from .db import Position, connect, read_meta, use_wal
from .errors import DatabaseError, SnapshotNeeded, SqlreplError
from .spool import Spool
from .watch import DatabaseWatcher
from .web import (
    Database,
    auth_middleware,
    error,
    forward_event,
    int_param,
    json_param,
    run_server,
    serve_snapshot,
)
from .wire import FrameWriter

log = logging.getLogger("sqlrepl.leader")
T = TypeVar("T")

#: Longest a follower may hold a batch request open waiting for changes.
MAX_WAIT = 60.0
#: Batches up to this size are built in memory; larger ones spill to a temp file.
SPOOL_MEMORY = 8 << 20
#: A batch still being built once it reaches this size starts streaming (chunked).
STREAM_AFTER = 1 << 20
SEND_SIZE = 1 << 20
#: A switchover target further behind than this is refused (without --force).
SWITCHOVER_MAX_LAG = 10_000
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
    #: Longest a switchover waits for its target to apply everything.
    switchover_timeout: float = 10.0
    #: Automatic failover: the etcd coordinator (None: static coordination).
    etcd: Etcd | None = None


#: Attempts (each waiting the busy timeout) before a leader gives up on a locked file.
BUSY_ATTEMPTS = 6


def _patiently(fn: Callable[[], T], db: Path) -> T:
    """Run `fn`, retrying while apps keep the file's write lock (they do let go eventually)."""
    for attempt in range(1, BUSY_ATTEMPTS + 1):
        try:
            return fn()
        except apsw.BusyError:
            if attempt == BUSY_ATTEMPTS:
                raise DatabaseError(f"{db} stayed locked by other writers; try again") from None
            log.warning("%s is busy (attempt %d of %d); retrying", db, attempt, BUSY_ATTEMPTS)
    raise AssertionError("unreachable")


class NotLeading(SqlreplError):
    """A batch was asked of a node that is no longer the leader."""


class Leader:
    def __init__(self, config: LeaderConfig) -> None:
        self.config = config
        self.url = f"http://{config.host}:{config.port}"
        conn = connect(config.db)
        use_wal(conn)
        self.position = _patiently(lambda: capture.install(conn), config.db)
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
        self.history = roles.history(conn)
        self.gate_open = roles.gate_open(conn)
        #: Set when this role ends: on SIGTERM, or when the node hands over leadership.
        self.done = asyncio.Event()
        self.transition: roles.Transition | None = None
        self.node = str(self.meta.get("node") or uuid.uuid4().hex[:12])
        #: False once this node stepped down: it ships nothing more.
        self.leading = True

    def app(self) -> web.Application:
        app = web.Application(middlewares=[auth_middleware(self.config.token)])
        app.router.add_get("/status", self.status)
        app.router.add_get("/batch", self.batch)
        app.router.add_get("/snapshot", self.snapshot)
        app.router.add_post("/switchover", self.switchover)
        app.router.add_post("/demote", self.demote)
        return app

    async def run(self, stop: asyncio.Event) -> roles.Transition | None:
        """Lead until `stop` (returns None) or until leadership passes on (returns where to)."""
        await self.db.run(self._report_problems)
        etcd = self.config.etcd
        if etcd is not None and etcd.lease_id is None and self.gate_open:
            await self.set_gate(False, "waiting for the leader lease in etcd")
        elif etcd is None and not self.gate_open:
            log.warning("write gate was closed: reopening it, this node is the leader")
            await self.set_gate(True)
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
            asyncio.create_task(self._release_waiters()),
            asyncio.create_task(forward_event(stop, self.done)),
        ]
        if self.config.trim_interval > 0:
            tasks.append(asyncio.create_task(self._trim_loop()))
        if etcd is not None:
            every = etcd.settings.loop_wait
            tasks.append(asyncio.create_task(ha.run(ha.leader_cycle, self, every)))
        try:
            await run_server(self.app(), self.config.host, self.config.port, self.done)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.watcher.stop()
            self.db.close()
            if etcd is not None and self.transition is None:
                with contextlib.suppress(SqlreplError):
                    await asyncio.to_thread(etcd.release)  # others need not wait for the TTL
            log.info("leader stopped" if self.transition is None else "leader role ended")
        return None if stop.is_set() else self.transition

    async def set_gate(self, open_: bool, reason: str = "") -> None:
        if open_:
            await self.db.run(roles.open_gate, self.db.conn)
        else:
            await self.db.run(roles.close_gate, self.db.conn, reason)
        self.gate_open = open_
        log.warning("write gate %s%s", "opened" if open_ else "closed: ", reason)

    def _lease_doubtful(self) -> bool:
        """etcd mode: the lease may have expired (e.g. just after a freeze): the gate is as
        good as closed, and the HA cycle is about to close it."""
        etcd = self.config.etcd
        return etcd is not None and (etcd.lease_id is None or etcd.lease_may_have_expired())

    async def step_down(self, reason: str) -> None:
        """Close the gate and ship nothing more; the HA cycle decides what comes next."""
        if self.gate_open:
            await self.set_gate(False, f"this node is no longer the leader: {reason}")
        if self.leading:
            log.warning("stepped down: %s", reason)
        self.leading = False
        if self.config.etcd is not None:
            with contextlib.suppress(SqlreplError):
                await asyncio.to_thread(self.config.etcd.release)

    async def take_epoch(self, epoch: int, why: str) -> None:
        """Lead a new epoch from the current head (re-elected after stepping down)."""
        self.position = await self.db.run(roles.new_epoch, self.db.conn, epoch, why, self.url)
        self.history = await self.db.run(roles.history, self.db.conn)
        self.leading = True

    def hand_over(self, transition: roles.Transition) -> None:
        """End this role shortly (after the current response is sent)."""
        self.transition = transition
        asyncio.get_running_loop().call_later(0.05, self.done.set)

    async def _release_waiters(self) -> None:
        """On shutdown, answer every held batch request at once."""
        await self.done.wait()
        self.stopping = True
        async with self.changed:
            self.changed.notify_all()

    async def _follow_changes(self) -> None:
        """On every file event: keep capture in step with the schema, publish the new head."""
        while True:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
            # that lands as the event fires, and this loop would then never end.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RECHECK_INTERVAL):
                    await self.watcher.dirty.wait()
            self.watcher.dirty.clear()
            try:
                await self.refresh()
            except apsw.BusyError:
                # Apps held the write lock for the whole busy timeout: look again soon.
                log.warning("database busy: capture sync postponed")
                self.watcher.dirty.set()

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
                "gate": "open" if self.gate_open and not self._lease_doubtful() else "closed",
                "leading": self.leading,
                "coordinator": "etcd" if self.config.etcd else "static",
                "node": self.node,
                "history": self.history,
            }
        )

    async def batch(self, request: web.Request) -> web.StreamResponse:
        after = int_param(request, "after")
        epoch = int_param(request, "epoch", 0)
        wait = min(max(float(int_param(request, "wait", 0)), 0.0), MAX_WAIT)
        if not self.leading or self._lease_doubtful():
            return error(503, "this node is not the leader now (no valid lease)")
        if epoch > self.position.epoch:
            return error(
                409,
                f"follower accepted epoch {epoch}, newer than this leader's {self.position.epoch}",
            )
        if epoch < self.position.epoch and roles.diverged(self.history, Position(epoch, after)):
            start = roles.start_of_next_epoch(self.history, epoch)
            return error(
                410,
                f"follower at {epoch}/{after} diverged: epoch {epoch} ended at seq {start} "
                "on this timeline",
            )
        self._register(request, after)
        if after == self.head and wait > 0 and epoch >= self.position.epoch:
            # (A follower still on an older epoch gets its answer at once: it accepts
            # this leader's epoch without waiting for the next change.)
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
        except NotLeading as exc:
            return error(503, str(exc))
        finally:
            if build.done():
                spool.close()
            else:
                build.add_done_callback(lambda _: spool.close())

    async def _wait_past(self, after: int, wait: float) -> None:
        async with self.changed:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self.changed.wait_for(lambda: self.head != after or self.stopping)

    def _build(self, after: int, spool: Spool, fts5: dict[str, str]) -> None:
        try:
            while True:
                try:
                    out = FrameWriter(spool.write)
                    batch.build(self.db.conn, after, out, self.tables, fts5)
                    return
                except batch.SchemaMoved:
                    if not capture.sync_capture(self.db.conn):
                        raise NotLeading("this node handed over its leadership") from None
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

    async def switchover(self, request: web.Request) -> web.Response:
        """Hand leadership to a follower with zero loss: close the gate, wait until the
        target applied everything, promote it, follow it."""
        to = request.query.get("to", "")
        force = request.query.get("force") == "1"
        try:
            async with Client(to, self.config.token) as client:
                target = await client.status()
        except SqlreplError as exc:
            return error(409, f"switchover refused: {to} is unknown or unreachable: {exc}")
        if target.get("role") != "follower" or target.get("cluster") != self.meta["cluster"]:
            return error(409, f"switchover refused: {to} is not a follower of this cluster")
        lag = int((target.get("lag") or {}).get("changes") or 0)
        if not force and not target.get("candidate"):
            return error(409, f"switchover refused: {to} is not a candidate (--no-candidate)")
        if not force and lag > SWITCHOVER_MAX_LAG:
            return error(409, f"switchover refused: {to} is lagging {lag} changes behind")
        started = time.monotonic()
        await self.set_gate(False, f"switchover to {to} in progress; retry on the new leader")
        top = await self.refresh()
        if not await self._caught_up(str(target.get("url")), top):
            await self.set_gate(True)
            return error(409, f"switchover abandoned: {to} did not reach seq {top} in time")
        if self.config.etcd is not None:
            self.leading = False
            await asyncio.to_thread(self.config.etcd.release)  # the target takes the key
        try:
            async with Client(to, self.config.token) as client:
                params = {"expect_seq": top, "why": f"switchover from {self.url}", "force": 1}
                promoted = await client.post("/promote", params)
        except SqlreplError as exc:
            await self.set_gate(True)
            return error(409, f"switchover abandoned: {to} did not take over: {exc}")
        self.leading = False
        await self.db.run(roles.demote, self.db.conn, to)
        self.hand_over(roles.Transition("follower", to, f"switchover to {to}"))
        log.warning("switchover: %s leads epoch %s from seq %s", to, promoted["epoch"], top)
        return web.json_response(
            {**promoted, "leader": to, "unavailable_s": round(time.monotonic() - started, 3)}
        )

    async def _caught_up(self, url: str, top: int) -> bool:
        deadline = time.monotonic() + self.config.switchover_timeout
        while time.monotonic() < deadline:
            if any(u == url and seq >= top for u, seq, _seen in self.followers.values()):
                return True
            await asyncio.sleep(0.01)
        return False

    async def demote(self, request: web.Request) -> web.Response:
        """A newer leader fences this one: close the gate, then rejoin as its follower."""
        new_leader = request.query.get("leader", "")
        epoch = int_param(request, "epoch")
        if epoch <= self.position.epoch:
            mine = self.position.epoch
            return error(409, f"epoch {epoch} is not newer than this leader's {mine}")
        self.leading = False
        await self.set_gate(False, f"deposed by {new_leader} (epoch {epoch})")
        self.hand_over(roles.Transition("follower", new_leader, f"deposed by {new_leader}"))
        return web.json_response({"demoted": self.url, "epoch": self.position.epoch})
