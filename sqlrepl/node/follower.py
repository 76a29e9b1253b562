"""The follower daemon: bootstrap from a snapshot, then pull batches and apply them."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from . import ha, rejoin, roles, snapshot
from .apply import Applier, adopt_epoch, applier_connection, follower_position
from .client import Client, expect_ok
from .config import DEFAULT_MAX_LAG
from .coordinator import Etcd
from .db import Position, connect, read_meta
from .errors import (
    ApplyError,
    AuthError,
    DatabaseError,
    PeerUnavailable,
    ProtocolError,
    SnapshotNeeded,
    SqlreplError,
    StaleEpochError,
)
from .schema import fts5_fingerprints
from .web import (
    Database,
    auth_middleware,
    error,
    forward_event,
    int_param,
    run_server,
    serve_snapshot,
)

log = logging.getLogger("sqlrepl.follower")

#: How long one batch request may wait at the leader for new changes.
POLL_WAIT = 30
#: Bodies up to this size are read whole and applied in one step.
SMALL_BATCH = 4 << 20
#: Larger (or streamed) batches are applied block by block as they arrive.
STREAM_BLOCK = 1 << 20
BACKOFF_MIN, BACKOFF_MAX = 0.1, 5.0


@dataclass
class FollowerConfig:
    db: Path
    leader: str
    host: str
    port: int
    token: str | None = None
    wait: int = POLL_WAIT
    #: May this node be promoted (by `promote`, `switchover` or the coordinator)?
    candidate: bool = True
    #: Most changes a candidate may lag its leader by and still be promoted.
    max_lag: int = DEFAULT_MAX_LAG
    #: Automatic failover: the etcd coordinator (None: static coordination).
    etcd: Etcd | None = None


@dataclass
class Progress:
    """What the follower knows of itself and its leader, for /status."""

    position: Position | None = None
    leader_head: int | None = None
    last_contact: float | None = None
    behind_since: float | None = None
    state: str = "starting"
    error: str | None = None

    def saw_leader(self, head: int) -> None:
        now = time.time()
        self.leader_head = head
        self.last_contact = now
        behind = self.position is not None and head > self.position.seq
        if behind and self.behind_since is None:
            self.behind_since = now
        elif not behind:
            self.behind_since = None


def check_existing(path: Path, leaders_too: bool = False) -> dict[str, Any] | None:
    """Meta of an existing follower file (with `leaders_too`, also a leader's: it may rejoin
    a newer leader); None if there is none yet; refuse anything else."""
    if not path.exists() or path.stat().st_size == 0:
        return None
    conn = connect(path, readonly=True)
    try:
        meta = read_meta(conn)
        if meta.get("role") == "leader" and leaders_too:
            return meta
        if meta.get("role") != "follower":
            raise DatabaseError(
                f"{path} exists and is not a sqlrepl follower; refusing to overwrite it "
                "(move it away, or give another path)"
            )
        return meta
    finally:
        conn.close()


class Follower:
    def __init__(self, config: FollowerConfig) -> None:
        self.config = config
        self.url = f"http://{config.host}:{config.port}"
        self.meta = check_existing(config.db, leaders_too=True)
        self.node = str((self.meta or {}).get("node") or uuid.uuid4().hex[:12])
        self.progress = Progress()
        self.db: Database | None = None
        self.client = Client(config.leader, config.token)
        #: Set when the leader's log no longer covers our position.
        self.need_snapshot = False
        #: Our FTS5 tables' fingerprints, sent with each pull (None: read them again).
        self.fts5: dict[str, str] | None = None
        self.history: list[dict[str, Any]] = []
        #: The rollback file written when this node rejoined with divergent changes.
        self.rollback: str | None = None
        self.done = asyncio.Event()
        self.transition: roles.Transition | None = None
        self.replicating: asyncio.Task[None] | None = None
        #: The leader answered as a leader of our cluster (checked before any pull).
        self.leader_checked = False
        self.fatal: BaseException | None = None

    def app(self) -> web.Application:
        app = web.Application(middlewares=[auth_middleware(self.config.token)])
        app.router.add_get("/status", self.status)
        app.router.add_get("/snapshot", self.snapshot)
        app.router.add_post("/promote", self.promote)
        return app

    async def run(self, stop: asyncio.Event) -> roles.Transition | None:
        """Follow until `stop` (returns None) or until promoted (returns the transition)."""
        forward = asyncio.create_task(forward_event(stop, self.done))
        server = asyncio.create_task(
            run_server(self.app(), self.config.host, self.config.port, self.done)
        )
        self._start_replicating()
        etcd = self.config.etcd
        checks = (
            asyncio.create_task(ha.run(ha.follower_cycle, self, etcd.settings.loop_wait))
            if etcd is not None
            else None
        )
        try:
            await server  # until done: stop, promotion, or a fatal replication error
            if self.fatal is not None:
                raise self.fatal
        finally:
            forward.cancel()
            if checks is not None:
                checks.cancel()
                await asyncio.gather(checks, return_exceptions=True)
            if self.replicating is not None:
                self.replicating.cancel()
                await asyncio.gather(self.replicating, return_exceptions=True)
            await self.client.close()
            if self.db:
                self.db.close()
            log.info("follower stopped" if self.transition is None else "follower role ended")
        return None if stop.is_set() else self.transition

    def _start_replicating(self) -> None:
        self.replicating = asyncio.create_task(self._replicate(self.done))
        self.replicating.add_done_callback(self._replication_ended)

    def _replication_ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.fatal = task.exception()  # a wrong file or token: the daemon stops
            self.done.set()

    def eligibility(self) -> tuple[bool, str | None]:
        """May this node be promoted now, and if not, why not."""
        p = self.progress
        if not self.config.candidate:
            return False, "not a candidate (started with --no-candidate)"
        if self.db is None or p.position is None:
            return False, "not bootstrapped yet"
        lag = max((p.leader_head or 0) - p.position.seq, 0)
        if lag > self.config.max_lag:
            return False, f"lagging {lag} changes behind its leader (max {self.config.max_lag})"
        return True, None

    @property
    def cluster(self) -> str | None:
        return (self.meta or {}).get("cluster")

    def repoint(self, url: str) -> None:
        """Follow another leader from now on (etcd named it)."""
        log.warning("now following %s (was %s)", url, self.config.leader)
        self.leader_checked = False
        old, self.config.leader = self.client, url
        self.client = Client(url, self.config.token)
        asyncio.create_task(old.close())  # an in-flight long poll fails and is retried

    async def become_leader(self, why: str, epoch: int | None = None) -> Position:
        """Stop replicating and promote this file; the node goes on as the leader."""
        assert self.db is not None
        self.transition = roles.Transition("leader", None, why)  # one promotion at a time
        if self.replicating is not None:
            self.replicating.cancel()
            await asyncio.gather(self.replicating, return_exceptions=True)
        try:
            where = await self.db.run(roles.promote, self.db.conn, self.node, self.url, why, epoch)
        except BaseException:
            self.transition = None  # still a follower: go on replicating
            self._start_replicating()
            raise
        log.warning("promoted to leader of epoch %s from seq %s: %s", where.epoch, where.seq, why)
        asyncio.get_running_loop().call_later(0.05, self.done.set)
        return where

    async def promote(self, request: web.Request) -> web.Response:
        """Become the leader of a new epoch, continuing seq from what was applied."""
        force = request.query.get("force") == "1"
        why = request.query.get("why") or "promoted by an operator"
        expect = int_param(request, "expect_seq", -1)
        ok, why_not = self.eligibility()
        where = self.progress.position
        if self.db is None or where is None:
            return error(409, "promote refused: not bootstrapped")
        if self.transition is not None:
            return error(409, "promote refused: already handing over")
        if not ok and not force:
            return error(409, f"promote refused: {why_not}")
        if expect >= 0 and expect != where.seq:
            return error(409, f"promote refused: at seq {where.seq}, expected {expect}")
        epoch = None
        if self.config.etcd is not None:
            info = {"url": self.url, "node": self.node, "cluster": self.cluster}
            epoch = await asyncio.to_thread(self.config.etcd.acquire, info, where.epoch)
            if epoch is None:
                return error(409, "promote refused: another node holds the leader key in etcd")
        where = await self.become_leader(why, epoch)
        if not why.startswith("switchover") and self.config.etcd is None:
            await self._fence(where)
        return web.json_response({"url": self.url, "epoch": where.epoch, "seq": where.seq})

    async def _fence(self, where: Position) -> None:
        """Best effort: tell the old leader, if it still runs, to close its gate and rejoin."""
        try:
            params = {"leader": self.url, "epoch": where.epoch}
            await self.client.post("/demote", params, timeout=2.0)
            log.info("old leader %s demoted itself", self.config.leader)
        except SqlreplError as exc:
            log.info("old leader %s not fenced (%s)", self.config.leader, exc)

    async def _replicate(self, stop: asyncio.Event) -> None:
        delay = BACKOFF_MIN
        while not stop.is_set():
            try:
                if self.db is None or self.need_snapshot or not self.leader_checked:
                    await self._bootstrap()
                await self._pull()
                delay = BACKOFF_MIN
                self.progress.error = None
                continue
            except SnapshotNeeded as exc:
                log.warning("%s: re-bootstrapping from a snapshot", exc)
                self.need_snapshot = True
                continue
            except ApplyError as exc:
                log.error("%s", exc)  # nothing of the batch was kept; retried with backoff
                self._failed(exc)
            except (AuthError, DatabaseError):
                raise
            except (PeerUnavailable, ProtocolError, StaleEpochError) as exc:
                self._failed(exc)
            with_stop = asyncio.create_task(stop.wait())
            await asyncio.wait({with_stop}, timeout=delay)
            with_stop.cancel()
            delay = min(delay * 2, BACKOFF_MAX)

    def _failed(self, exc: SqlreplError) -> None:
        message = str(exc)
        if message != self.progress.error:
            log.warning("%s; retrying (backoff up to %ss)", message, BACKOFF_MAX)
        self.progress.error = message
        self.progress.state = "retrying"

    async def _bootstrap(self) -> None:
        follows = self.meta is not None and self.meta.get("role") == "follower"
        if follows and self.db is None and not self.need_snapshot:
            # Our position is ours to know: open before reaching the leader, so that a
            # follower restarted while its leader is down reports where it is and can be
            # promoted. Nothing is pulled until the leader passed the checks below.
            self._open()
        info = await self.client.status()
        if info.get("role") != "leader":
            raise ProtocolError(f"{self.config.leader} is not a leader (role {info.get('role')})")
        if self.meta and self.meta.get("cluster") != info.get("cluster"):
            raise DatabaseError(
                f"{self.config.db} belongs to cluster {self.meta.get('cluster')}, but "
                f"{self.config.leader} leads cluster {info.get('cluster')}; refusing to touch it"
            )
        self.history = list(info.get("history") or [])
        if self.meta and self.meta.get("role") == "leader":
            if int(info.get("epoch") or 0) <= int(self.meta["epoch"]):
                raise DatabaseError(
                    f"{self.config.db} is the leader of epoch {self.meta['epoch']}; "
                    f"{self.config.leader} leads epoch {info.get('epoch')}, not a newer one: "
                    "refusing to turn it into a follower"
                )
            await self._rejoin()
        self.leader_checked = True
        if self.meta and not self.need_snapshot:
            if self.db is None:
                self._open()
            return
        self.progress.state = "bootstrapping"
        await self._install_snapshot()
        self.need_snapshot = False

    async def _install_snapshot(self) -> None:
        db = self.config.db
        tmp = db.parent / f".{db.name}.sqlrepl-download"
        tmp.unlink(missing_ok=True)
        log.info("downloading a snapshot from %s", self.config.leader)
        try:
            where = await self.client.download_snapshot(
                tmp, {"node": self.node, "url": self.url}, _log_progress()
            )
            await asyncio.to_thread(snapshot.verify, tmp)
            await asyncio.to_thread(snapshot.make_follower, tmp, self.config.leader, self.node)
            if self.db is not None:
                await self.db.run(snapshot.place, tmp, db)
            else:
                await asyncio.to_thread(snapshot.place, tmp, db)
        finally:
            tmp.unlink(missing_ok=True)
        log.info("bootstrapped %s from a snapshot at %s", db, where)
        self.fts5 = None
        self.meta = check_existing(db)
        if self.db is None:
            self._open()
        else:
            self.progress.position = await self.db.run(follower_position, self.db.conn)

    async def _rejoin(self) -> None:
        """A deposed leader's file: save what diverged to a rollback file, then follow."""
        conn = connect(self.config.db)
        try:
            mine = await asyncio.to_thread(rejoin.position, conn)
            if roles.diverged(self.history, mine):
                path = await asyncio.to_thread(rejoin.save_divergence, conn, self.history, mine)
                self.rollback = str(path)
                self.need_snapshot = True
                log.error(
                    "this node diverged at %s: its changes after the fork are in %s; "
                    "resyncing from %s",
                    mine,
                    path,
                    self.config.leader,
                )
            await asyncio.to_thread(roles.demote, conn, self.config.leader)
        finally:
            conn.close()
        self.meta = check_existing(self.config.db)
        log.info("rejoined as a follower of %s", self.config.leader)

    def _open(self) -> None:
        conn = applier_connection(connect(self.config.db))
        self.db = Database(conn)
        self.progress.position = follower_position(conn)
        log.info("following %s from %s", self.config.leader, self.progress.position)

    async def _pull(self) -> None:
        assert self.db is not None and self.progress.position is not None
        where = self.progress.position
        if self.fts5 is None:
            self.fts5 = await self.db.run(fts5_fingerprints, self.db.conn)
        params = {
            "after": where.seq,
            "epoch": where.epoch,
            "wait": self.config.wait,
            "node": self.node,
            "url": self.url,
            "fts5": json.dumps(self.fts5),
        }
        async with self.client.get("/batch", params, timeout=self.config.wait + 30) as response:
            await expect_ok(response)
            head = int(response.headers.get("X-Sqlrepl-Head", where.seq))
            epoch = int(response.headers.get("X-Sqlrepl-Epoch", where.epoch))
            if epoch > where.epoch and self.config.etcd is not None:
                await self._confirm_epoch(epoch)
            self.progress.state = "streaming"
            self.progress.saw_leader(head)  # known before applying: lag shows while we apply
            if response.status == 200:
                await self._apply(response)
                self.progress.saw_leader(head)
            elif epoch > where.epoch:
                # Nothing new, but a newer leader: accept its epoch now (the fencing token),
                # not only with its next change.
                self.progress.position = await self.db.run(adopt_epoch, self.db.conn, epoch)
                log.info("accepted epoch %s from %s", epoch, self.config.leader)

    async def _apply(self, response: aiohttp.ClientResponse) -> None:
        assert self.db is not None
        applier = Applier(self.db.conn)
        try:
            size = response.content_length
            if size is not None and size <= SMALL_BATCH:
                body = await response.read()
                if len(body) != size:
                    raise ProtocolError("batch is truncated")
                self.progress.position = await self.db.run(_apply_whole, applier, body)
                self._saw_history(applier)
                return
            await self._apply_streamed(response, applier)
            self._saw_history(applier)
            log.info(
                "applied a large batch: %d rows, now at %s", applier.rows, self.progress.position
            )
        except BaseException as exc:
            await self.db.run(applier.abort)
            if isinstance(exc, aiohttp.ClientPayloadError):
                raise ProtocolError(f"batch transfer broke off: {exc}") from exc
            raise

    async def _confirm_epoch(self, epoch: int) -> None:
        """Accept a newer epoch only if etcd says this leader holds it."""
        assert self.config.etcd is not None
        holder = await asyncio.to_thread(self.config.etcd.leader)
        if not holder or holder.get("epoch") != epoch or holder.get("url") != self.config.leader:
            raise StaleEpochError(
                f"{self.config.leader} claims epoch {epoch}, which etcd does not confirm"
            )

    def _saw_history(self, applier: Applier) -> None:
        """Take what an applied batch tells: the history; whether FTS5 indexes moved."""
        header = applier.header or {}
        if header.get("history"):
            self.history = json.loads(header["history"])
        names = {str(desc[0]) for desc in applier.tables.values()}
        if header.get("schema") is not None or any(
            n.rsplit("_", 1)[0] in (self.fts5 or {}) for n in names
        ):
            self.fts5 = None  # read the fingerprints again before the next pull

    async def _apply_streamed(self, response: aiohttp.ClientResponse, applier: Applier) -> None:
        """Apply each block while the next one arrives; commit at the end."""
        assert self.db is not None
        applying: asyncio.Future[None] | None = None
        try:
            async for block in response.content.iter_chunked(STREAM_BLOCK):
                if applying is not None:
                    await applying
                applying = asyncio.ensure_future(self.db.run(applier.feed, block))
            if applying is not None:
                await applying
        finally:
            if applying is not None and not applying.done():
                await asyncio.wait({applying})
        self.progress.position = await self.db.run(applier.finish)

    async def status(self, request: web.Request) -> web.Response:
        p = self.progress
        eligible, why_not = self.eligibility()
        now = time.time()
        return web.json_response(
            {
                "role": "follower",
                "url": self.url,
                "db": str(self.config.db),
                "node": self.node,
                "cluster": (self.meta or {}).get("cluster"),
                "epoch": p.position.epoch if p.position else None,
                "seq": p.position.seq if p.position else None,
                "leader": self.config.leader,
                "leader_seq": p.leader_head,
                "lag": {
                    "changes": max((p.leader_head or 0) - (p.position.seq if p.position else 0), 0),
                    "seconds": round(now - p.behind_since, 3) if p.behind_since else 0.0,
                },
                "last_contact": round(now - p.last_contact, 3) if p.last_contact else None,
                "state": p.state,
                "error": p.error,
                "candidate": self.config.candidate,
                "eligible": eligible,
                "why_not": why_not,
                "gate": "closed",
                "history": self.history,
                "rollback": self.rollback,
            }
        )

    async def snapshot(self, request: web.Request) -> web.StreamResponse:
        if self.db is None:
            return web.json_response({"error": "not bootstrapped yet"}, status=503)
        return await serve_snapshot(request, self.db, self.config.db)


def _apply_whole(applier: Applier, body: bytes) -> Position:
    applier.feed(body)
    return applier.finish()


def _log_progress() -> Any:
    last = [0.0]

    def report(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] >= 2 or done == total:
            last[0] = now
            log.info("snapshot: %d of %d bytes", done, total)

    return report
