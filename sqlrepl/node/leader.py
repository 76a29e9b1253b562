"""The leader role: capture in step with the schema, the write gate, the role's tasks.

HTTP handlers live in `leader_http` (status, snapshots, switchover, demote) and
`batches` (long-polled batches); the follower registry and log trims in `retention`; the
HA loop in `ha`. Every background task runs under one `Supervisor`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import apsw

from .. import config
from ..config import own_url, server_ssl
from ..coord import Coordinator
from ..core import batch, capture, gate, internals, roles
from ..core.db import connect, read_meta, schema_version, use_wal
from ..core.positions import log_head
from ..errors import SqlreplError
from . import ddl, disk, ha, handover, identity, sync
from .database import Database, close_gate_first, patiently
from .ddl import Deferral
from .http import run_server
from .leader_http import LeaderAPI
from .members import Members
from .retention import Retention
from .supervisor import Supervisor
from .watch import DatabaseWatcher

log = logging.getLogger("sqlrepl.leader")
T = TypeVar("T")


@dataclass
class LeaderConfig:
    db: Path
    host: str
    port: int
    token: str | None = None
    #: Seconds a silent follower stays in the registry (and status).
    retention: float = config.DEFAULT_RETENTION
    #: Changes the log keeps (bounded in the capture path).
    log_limit: int = config.DEFAULT_LOG_LIMIT
    #: Longest a switchover waits for its target to apply everything.
    switchover_timeout: float = config.DEFAULT_SWITCHOVER_TIMEOUT
    #: Coordinator URL (None: static) and the lease TTL.
    coordinator: str | None = None
    ttl: int = config.DEFAULT_TTL
    #: The URL others reach this node at (default: from the listen address).
    advertise: str | None = None
    #: Serve https with this certificate and key; with `tls_client_ca`, only to clients
    #: whose certificate it signed (mutual TLS).
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    #: Writes are refused while fewer followers than this are connected and fresh.
    min_sync_replicas: int = 0
    #: ... within this many seconds of the head.
    max_replica_lag: float = config.DEFAULT_MAX_REPLICA_LAG


class Leader:
    def __init__(self, config: LeaderConfig, coord: Coordinator, listener: socket.socket) -> None:
        self.config = config
        self.coord = coord
        self.listener = listener
        conn = connect(config.db)
        identity.check(config.db, internals.cluster_of(conn))
        use_wal(conn)
        self.position = patiently(
            lambda: capture.install(conn, log_limit=config.log_limit), config.db
        )
        self.meta = read_meta(conn)
        identity.remember(config.db, str(self.meta["cluster"]))
        #: Set when an app dropped sqlrepl's tables and the leader rebuilt them (status).
        self.tampered: str | None = None
        #: Set while apps keep the file locked past the busy timeout (status).
        self.locked: str | None = None
        #: The schema version capture was last known to be in step with (see `ddl`).
        self.schema_version = schema_version(conn)
        self.db = Database(conn)
        self.head = self.position.seq
        self.changed = asyncio.Condition()
        self.tls = server_ssl(config.tls_cert, config.tls_key, config.tls_client_ca)
        self.url = own_url(config)
        members = Members(config.db, self.url)
        self.retention = Retention(config.retention, members)
        self.watcher = DatabaseWatcher(config.db)
        self.stopping = False
        self.tables = batch.TableCache()
        #: What the schema holds that sqlrepl cannot replicate (logged and in /status).
        self.problems: list[str] = []
        self.history = roles.history(conn)
        #: The file's write gate: changed only by this daemon, through `set_gate`.
        self.gate_open = gate.is_open(conn)
        #: Whether the rest of the daemon wants the gate open (`hold` may overrule it).
        self.gate_wanted = self.gate_open
        #: Why the gate stays closed though this node leads: too few sync replicas.
        self.hold = sync.initial_hold(config.min_sync_replicas)
        self.acks = sync.Acks()
        #: Set when this role ends: on SIGTERM, a handover, or a failed task.
        self.done = asyncio.Event()
        self.transition: roles.Transition | None = None
        self.node = str(self.meta.get("node") or uuid.uuid4().hex[:12])
        #: False once this node stepped down: it ships nothing more.
        self.leading = True
        #: A handover is under way: the HA loop leaves the gate and the lease to it.
        self.handing_over = False
        #: When capture catches up with a schema change (a write): at a quiet moment.
        self.ddl = Deferral()
        #: Why the database's disk cannot take writes now (None: it can), probed regularly.
        self.disk_error: str | None = None

    async def run(self, stop: asyncio.Event) -> roles.Transition | None:
        """Lead until `stop` (returns None) or until leadership passes on (returns where to)."""
        config.LOG_CONTEXT.update(node=self.node, role="leader", epoch=self.position.epoch)
        await self.db.run(self.report_problems)
        await asyncio.to_thread(self.coord.check_config, self.meta["cluster"])
        if self.coord.holds_lease() != self.gate_open:
            await self.set_gate(self.coord.holds_lease(), "waiting for the leader lease")
        if self.hold is not None and self.gate_open:  # closed before anyone is told we lead
            await self.set_gate(False, self.hold, held=True)
        log.info(
            "leading %s on %s: cluster %s, epoch %s, seq %s",
            self.config.db,
            self.url,
            self.meta["cluster"],
            self.position.epoch,
            self.head,
        )
        self.watcher.start()
        try:
            async with Supervisor(self.done) as tasks:
                tasks.loop("stop signal", handover.stop_when(self, stop))
                tasks.loop("change loop", self._follow_changes())
                tasks.loop("disk check", disk.watch(self))
                tasks.task("batch waiters", self._release_waiters())
                if self.coord.automatic:
                    tasks.loop("HA loop", ha.run_leader(self))
                if self.config.min_sync_replicas > 0:
                    tasks.loop("sync replicas", sync.enforce_min_replicas(self))
                app = LeaderAPI(self).app()
                tasks.task("HTTP server", run_server(app, self.listener, self.done, self.tls))
        finally:
            self.watcher.stop()
            self.db.close()
            if self.transition is None:
                with contextlib.suppress(SqlreplError):
                    await asyncio.to_thread(self.coord.release)  # others need not wait the TTL
            log.info("leader stopped" if self.transition is None else "leader role ended")
        return None if stop.is_set() else self.transition

    async def set_gate(self, open_: bool, reason: str = "", held: bool = False) -> None:
        """Open or close the file's write gate. Closing never gives up on a busy file: it
        tries again until the app lets go of the write lock, and closes the moment it does;
        opening a busy file is left to the next attempt. While `hold` is set (too few sync
        replicas) an opening is remembered and done when the hold lifts."""
        if not held:
            self.gate_wanted = open_
        if open_ and self.hold is not None:
            return
        while True:
            try:
                if open_:
                    await self.db.run(gate.open_, self.db.conn)
                else:
                    await self.db.run(close_gate_first, self.db.conn, reason)
                break
            except apsw.BusyError:
                if open_:
                    log.warning("write gate not opened: %s is locked by an app", self.config.db)
                    return
                log.error(
                    "write gate NOT closed yet: an app holds the write lock on %s; "
                    "still trying (%s)",
                    self.config.db,
                    reason,
                )
        self.gate_open = open_
        log.warning("write gate %s%s", "opened" if open_ else "closed: ", reason)

    def lease_doubtful(self) -> bool:
        """The lease may have expired (e.g. just after a freeze): ship nothing; the HA
        cycle is about to close the gate."""
        return not self.coord.holds_lease() or self.coord.lease_may_have_expired()

    async def step_down(self, reason: str, release: bool = True) -> None:
        """Close the gate and ship nothing more; give the lease up unless told not to."""
        if self.gate_open:
            try:
                await self.set_gate(False, f"this node is no longer the leader: {reason}")
            except apsw.FullError:
                await disk.close_gate_on_a_full_disk(self, reason)
            except (apsw.ReadOnlyError, apsw.IOError) as exc:
                # The disk refuses every write, the apps' too: the lease goes anyway, or no
                # node would take writes until an operator stepped in.
                log.error("write gate NOT closed (%s): %s refuses writes", exc, self.config.db)
        if self.leading:
            log.warning("stepped down: %s", reason)
        self.leading = False
        if release:
            with contextlib.suppress(SqlreplError):
                await asyncio.to_thread(self.coord.release)

    async def take_epoch(self, epoch: int, why: str) -> None:
        """Lead a new epoch from the current head (re-elected after stepping down)."""
        conn = self.db.conn
        self.position = await self.db.run(roles.new_epoch, conn, epoch, why, self.url, time.time())
        self.history = await self.db.run(roles.history, conn)
        self.leading = True
        config.LOG_CONTEXT["epoch"] = epoch

    def hand_over(self, transition: roles.Transition) -> None:
        """End this role shortly (after the current response is sent)."""
        self.transition = transition
        asyncio.get_running_loop().call_later(0.05, self.done.set)

    async def refresh(self, now: bool = False) -> int:
        """Sync capture with the schema if it moved (when `ddl` says so, or `now`: until
        then the head stays where it was); publish the new head to waiters."""
        top = await self.db.run(self._sync_and_head, now)
        if top is None:
            return self.head
        if top != self.head:
            self.head = top
            async with self.changed:
                self.changed.notify_all()
        return top

    async def _release_waiters(self) -> None:
        """When the role ends, answer every held batch request at once."""
        await self.done.wait()
        self.stopping = True
        async with self.changed:
            self.changed.notify_all()

    async def _follow_changes(self) -> None:
        """On every file event: keep capture in step with the schema, publish the new head."""
        last_look = 0.0
        follow_ups: list[float] = []
        while True:
            wait = self.ddl.next_look(config.RECHECK_INTERVAL)
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
            # that lands as the event fires, and this loop would then never end.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min([wait, *follow_ups[:1]])):
                    await self.watcher.dirty.wait()
            if self.watcher.dirty.is_set():
                self.ddl.wrote()
                # Under a stream of commits, at most one look (and one batch per follower)
                # per LOOK_INTERVAL_S: apps run faster beside the daemon. A commit after a
                # quiet spell is looked at at once, and so is one an app waits for (`hurry`).
                pause = last_look + config.LOOK_INTERVAL_S - time.monotonic()
                if pause > 0:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(pause):
                            await self.acks.hurry.wait()
                self.acks.hurry.clear()
                last_look = time.monotonic()
                # A commit writes its WAL frames (the event) before it publishes them in
                # the shared-memory index (no event): look again shortly, or a look that
                # came in between would leave that commit unseen until the next write.
                follow_ups = list(config.FOLLOW_UP_LOOKS_S)
            elif follow_ups:
                follow_ups.pop(0)
            self.watcher.dirty.clear()
            self.watcher.rearm()  # writes from here on wake the next look
            try:
                await self.refresh()
                if self.locked is not None:
                    log.warning("%s can be read again", self.config.db)
                self.locked = None
            except apsw.BusyError:
                # Apps held the lock for the whole busy timeout: say so, look again soon.
                if self.locked is None:
                    self.locked = (
                        f"{self.config.db} stays locked by another connection (an app in "
                        "PRAGMA locking_mode=EXCLUSIVE, or one holding a transaction open?): "
                        "nothing new is replicated until it lets go"
                    )
                    log.error("%s", self.locked)
                self.watcher.dirty.set()

    def _sync_and_head(self, now: bool = False) -> int | None:
        """In the database thread: the log's head, once capture is in step with the
        schema (None while a sync waits for a quiet moment, unless `now`)."""
        return log_head(self.db.conn) if ddl.catch_up(self, now) else None

    def all_problems(self) -> list[str]:
        """What status reports: what cannot be replicated, and a failing disk."""
        extra = [p for p in (self.disk_error, self.tampered, self.locked, self.hold) if p]
        return [*self.problems, *extra]

    def report_problems(self) -> None:
        """Say loudly, after every schema sync, what cannot be replicated."""
        self.problems = capture.problems(self.db.conn)
        for problem in self.problems:
            log.error("%s", problem)
