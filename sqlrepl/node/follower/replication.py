"""The follower's replication loop: check the leader, bootstrap or rejoin, pull, apply.

Each batch is applied in one SQLite transaction together with the position; a large one
block by block as it arrives. Transient failures are retried with backoff and shown in
status; a batch this file refuses again and again is given up for a snapshot; a wrong
file or token ends the role (through the supervisor).
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import aiohttp
import apsw

from ... import config
from ...core import roles
from ...core.apply import Applier, adopt_epoch
from ...core.cluster import ClusterSettings
from ...core.positions import Position
from ...core.requests import BatchRequest
from ...core.schema import fts5_fingerprints
from ...core.wire import EPOCH_HEADER, HEAD_HEADER, MEMBERS_HEADER, SETTINGS_HEADER
from ...errors import (
    ApplyError,
    AuthError,
    DatabaseError,
    Diverged,
    PeerUnavailable,
    ProtocolError,
    SnapshotNeeded,
    SqlreplError,
    StaleEpochError,
    StorageError,
    Unappliable,
)
from .. import discovery, metrics
from ..client import Client, expect_ok
from ..freshness import FreshnessFile
from ..members import Members
from . import applying, archive, bootstrap
from .parts import Replicated
from .progress import Meter, Progress

log = logging.getLogger("sqlrepl.follower")


class Replicator:
    """Pulls and applies; owns the follower's progress, the leader it follows now, and
    that leader's epoch history."""

    def __init__(self, follower: Replicated) -> None:
        self.f = follower
        self.progress = Progress()
        #: The leader followed now (the configured one until a repoint).
        self.leader = follower.config.leader
        self.history: list[dict[str, Any]] = []
        #: The freshness proof beside the file, for apps that read it directly.
        keepalive = follower.config.wait + config.STALL_GRACE
        self.fresh_file = FreshnessFile(follower.config.db, keepalive)
        self.client = Client(self.leader, follower.config.token, follower.config.client_tls)
        #: Set when the leader's log no longer covers our position.
        self.need_snapshot = False
        #: An archive (if any) records on a chain that continues the file's position
        #: (False: not known yet; None: a re-bootstrap broke it).
        self.archived: bool | None = False
        #: Our FTS5 tables' fingerprints, sent with each pull (None: read them again).
        self.fts5: dict[str, str] | None = None
        #: The leader answered as a leader of our cluster (checked before any pull).
        self.leader_checked = False
        #: The next pull asks without waiting (right after a check: learn the head now).
        self.ask_now = True
        #: Every member the leaders told us of: asked when the leader is lost.
        self.members = Members(follower.config.db, follower.url)
        self.members.add([follower.config.leader])
        #: Who began the epoch this file is on (from its own history; None: read it again).
        self.epoch_url: str | None = None

    def repoint(self, url: str) -> None:
        """Follow another leader from now on."""
        log.warning("now following %s (was %s)", url, self.leader)
        self.leader = url
        self.leader_checked = False
        self.members.add([url])
        old, self.client = self.client, Client(url, self.f.config.token, self.f.config.client_tls)
        asyncio.create_task(old.close())  # an in-flight long poll fails and is retried

    async def close(self) -> None:
        await self.client.close()

    def promoted(self, where: Position) -> None:
        """The file was promoted at `where`: status says so until the leader role serves."""
        self.progress.position = where

    async def run(self, stop: asyncio.Event) -> None:
        delay = config.BACKOFF_MIN
        while not stop.is_set():
            try:
                if self.f.file.db is None or self.need_snapshot or not self.leader_checked:
                    await self._bootstrap()
                if self.f.archive is not None and not self.archived:
                    assert self.progress.position is not None
                    self.archived = await archive.start(
                        self.f.archive,
                        self.f.file,
                        self.leader,
                        self.progress.position,
                        rebase=self.archived is None,
                    )
                await self._pull()
                delay = config.BACKOFF_MIN
                continue
            except Diverged as exc:
                assert self.progress.position is not None
                await self.f.file.save_fork(self.progress.position, str(exc))
                self.need_snapshot, self.archived = True, None
                continue
            except SnapshotNeeded as exc:
                log.warning("%s: re-bootstrapping from a snapshot", exc)
                self.need_snapshot, self.archived = True, None
                continue
            except Unappliable as exc:
                # Nothing of the batch was kept. The same batch failing the same way again
                # and again cannot be applied here: start over from a snapshot.
                self._failed(exc)
                if self.progress.trouble.given_up():
                    self._give_up_batch(exc)
                    continue
            except (OSError, StorageError, apsw.FullError, apsw.IOError, apsw.ReadOnlyError) as exc:
                # A full or failing disk: nothing half-written is kept; retried, shown.
                self._failed(applying.storage_problem(exc, self.f.config.db))
            except ApplyError as exc:  # a busy file: not the batch's fault
                self._failed(exc)
            except (AuthError, DatabaseError):
                raise
            except (PeerUnavailable, ProtocolError, StaleEpochError) as exc:
                self._failed(exc)
                await self._find_leader()
            with_stop = asyncio.create_task(stop.wait())
            await asyncio.wait({with_stop}, timeout=delay)
            with_stop.cancel()
            delay = min(delay * 2, config.BACKOFF_MAX)

    def _failed(self, exc: SqlreplError) -> None:
        metrics.ERRORS.labels(type(exc).__name__).inc()
        self.progress.trouble.note(str(exc))  # logged once, counted while it repeats
        self.progress.state = "retrying"

    def _give_up_batch(self, exc: Unappliable) -> None:
        tries = self.progress.trouble.count
        log.error("%s (%d tries): re-bootstrapping from a snapshot", exc, tries)
        if self.f.archive is not None:
            where = self.progress.position
            log.error("archive: its chain ends at %s; a new one begins with a snapshot", where)
        self.need_snapshot, self.archived = True, None

    async def _find_leader(self) -> None:
        """The leader is lost or no longer leads: follow whichever member now leads our
        cluster on a newer epoch, if one answers."""
        f = self.f
        mine = self.progress.position.epoch if self.progress.position else 0
        answers = await discovery.survey(self.members.others(), f.config.token, f.config.client_tls)
        self.members.add(str(a["url"]) for a in answers if a.get("url"))
        newest = discovery.newest_leader(answers, f.cluster, mine - 1)
        if newest and newest != self.leader and newest != f.url:
            self.repoint(newest)

    async def _bootstrap(self) -> None:
        f, file, leader = self.f, self.f.file, self.leader
        meta = file.meta
        follows = meta is not None and meta.get("role") == "follower"
        if follows and file.db is None and not self.need_snapshot:
            # Our position is ours to know: open before reaching the leader, so that a
            # follower restarted while its leader is down reports where it is and can be
            # promoted. Nothing is pulled until the leader passed the checks below.
            self.progress.position = file.open(leader)
        info = await self.client.status()
        if info.get("role") != "leader":
            raise ProtocolError(f"{leader} is not a leader (role {info.get('role')})")
        if meta and meta.get("cluster") != info.get("cluster"):
            raise DatabaseError(
                f"{f.config.db} belongs to cluster {meta.get('cluster')}, but "
                f"{leader} leads cluster {info.get('cluster')}; refusing to touch it"
            )
        self.history = list(info.get("history") or [])
        fetched = None
        if meta and meta.get("role") == "leader":
            if int(info.get("epoch") or 0) <= int(meta["epoch"]):
                await asyncio.to_thread(file.reopen_gate)  # if this role closed it
                raise DatabaseError(
                    f"{f.config.db} is the leader of epoch {meta['epoch']}; "
                    f"{leader} leads epoch {info.get('epoch')}, not a newer one: "
                    "refusing to turn it into a follower"
                )
            fetched = await file.rejoin(leader, self.history, self._fetch)
            self.need_snapshot |= fetched is not None
        self.leader_checked = True
        self.ask_now = True
        self.epoch_url = None
        if not file.meta or self.need_snapshot:
            self.progress.state = "bootstrapping"
            tmp = fetched or await self._fetch()
            self.progress.position = await file.install(tmp, leader, f.node)
            self.fts5 = None
            self.need_snapshot = False
            self.progress.ok()  # a new file: what failed on the old one is over
        elif file.db is None:
            self.progress.position = file.open(leader)

    async def _fetch(self) -> Path:
        """Download a snapshot of the leader (its progress in status while it runs)."""
        meter = self.progress.transfer = Meter()
        try:
            params = {"node": self.f.node, "url": self.f.url}
            return await bootstrap.fetch_snapshot(self.f.config.db, self.client, params, meter)
        finally:
            self.progress.transfer = None

    async def _pull(self) -> None:
        f = self.f
        assert f.file.db is not None and self.progress.position is not None
        where = self.progress.position
        if self.fts5 is None:
            self.fts5 = await f.file.db.run(fts5_fingerprints, f.file.db.conn)
        if self.epoch_url is None:
            history = await f.file.db.run(roles.history, f.file.db.conn)
            self.epoch_url = roles.epoch_url(history, where.epoch)
        params = BatchRequest(
            after=where.seq,
            epoch=where.epoch,
            wait=0 if self.ask_now else f.config.wait,
            node=f.node,
            url=f.url,
            fts5=self.fts5,
            epoch_url=self.epoch_url or "",
            archive=f.archive is not None,
            candidate=f.config.candidate,
        ).query()
        stall = f.config.wait + config.STALL_GRACE
        async with self.client.get("/batch", params, None, stall) as response:
            await expect_ok(response)
            head = int(response.headers.get(HEAD_HEADER, where.seq))
            self.members.add(json.loads(response.headers.get(MEMBERS_HEADER, "[]")))
            f.coord.carry(ClusterSettings.load(response.headers.get(SETTINGS_HEADER)))
            epoch = int(response.headers.get(EPOCH_HEADER, where.epoch))
            if epoch > where.epoch:
                await self._confirm_epoch(epoch)
                self.epoch_url = None
            self.progress.state = "streaming"
            self.ask_now = False
            self.progress.saw_leader(head)  # known before applying: lag shows while we apply
            if response.status == 200:
                await self._apply(response)
                self.progress.saw_leader(head)
            elif epoch > where.epoch:
                # Nothing new, but a newer leader: accept its epoch now (the fencing token),
                # not only with its next change.
                self.progress.position = await f.file.db.run(adopt_epoch, f.file.db.conn, epoch)
                log.info("accepted epoch %s from %s", epoch, self.leader)
            self.fresh_file.update(self.progress.fresh_at, self.progress.lag() > 0)
            self.progress.ok()  # the leader answered and what it sent is applied

    async def _confirm_epoch(self, epoch: int) -> None:
        """Accept a newer epoch only if the coordinator confirms this leader holds it."""
        leader = self.leader
        if not await asyncio.to_thread(self.f.coord.confirm, leader, epoch):
            raise StaleEpochError(
                f"{leader} claims epoch {epoch}, which the coordinator does not confirm"
            )

    async def _apply(self, response: aiohttp.ClientResponse) -> None:
        f = self.f
        db = f.file.db
        assert db is not None
        applier = Applier(db.conn)
        before, recorder = self.progress.position, f.archive
        try:
            after = await applying.apply(db, applier, response, recorder)
            try:  # an archive says it holds a batch once it is recorded, not before
                if recorder and before is not None:
                    await archive.recorded(recorder, f.file, self.leader, before, after)
            finally:
                self.progress.position = after
            history, stale = applying.learned(applier)
            self.history = history if history is not None else self.history
            self.fts5 = None if stale else self.fts5  # read again before the next pull
        except BaseException as exc:
            await db.run(applier.abort)
            if recorder:
                recorder.abort()
                if self.progress.position != before:  # applied but not recorded: a gap
                    self.archived = None
            meaning = applying.failure(exc, before)
            if meaning is not None:
                raise meaning from exc
            raise
