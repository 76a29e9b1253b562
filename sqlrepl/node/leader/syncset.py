"""The leader's sync set (`core.quorum`): the followers whose acknowledgements count,
recorded in the coordinator before any acknowledgement needs it.

Synchronous mode starts for the cluster with the first `wait` an app asks for (or with a
set recorded by an earlier leader, whose `k` carries over) and is said in the log. The
leader then keeps the invariant of `core.quorum` with three moves, each recorded before
it counts: a connected voter joins at once (always safe); `k` is lowered before a
`wait` asks for fewer acknowledgements; a member silent for `drop_after` seconds leaves
only once `k` other members hold everything acknowledged. A new epoch's first set names
only followers that hold the position the epoch began at: what earlier leaders had
acknowledged is then on every member. Nobody counts while the set cannot be recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from ...coord import Coordinator
from ...core.cluster import ClusterSettings
from ...core.quorum import SyncSet, may_drop
from ...errors import SqlreplError
from .acks import Acks, Voters
from .head import LogHead

log = logging.getLogger("sqlrepl.leader")
#: How often the set is looked at besides on every acknowledgement.
LOOK_EVERY = 0.5
#: How often the cluster's settings are read again.
SETTINGS_EVERY = 1.0


class SyncKeeper:
    def __init__(
        self,
        coord: Coordinator,
        node: str,
        head: LogHead,
        acks: Acks,
        voters: Voters,
        drop_after: float,
        seed: ClusterSettings,
    ) -> None:
        self.coord = coord
        self.node = node
        self.head = head
        self.acks = acks
        self.voters = voters
        self.drop_after = drop_after
        #: What the coordinator holds for this epoch (None: nothing recorded yet).
        self.recorded: SyncSet | None = None
        #: The smallest `k` asked for this epoch (None: synchronous mode is off).
        self.wanted: int | None = None
        #: The newest seq acknowledged (at least where this epoch began).
        self.acknowledged = head.position.seq
        #: Members on their way out: they count no more.
        self._leaving: set[str] = set()
        self._epoch = -1
        self.problem: str | None = None
        #: This node's own flags or TOML: they seed a new cluster's settings.
        self.seed = seed
        #: The cluster's settings, as this leader knows them now.
        self.settings = seed
        self._settings_read = 0.0

    def counted(self, needed: int) -> set[str]:
        """The followers whose acknowledgements count for a `wait` needing `needed`."""
        rec = self.recorded
        if rec is None or rec.epoch != self.head.epoch or rec.k > needed:
            return set()
        return set(rec.members) - self._leaving

    def want(self, needed: int) -> None:
        """A `wait` asks for `needed` acknowledgements: synchronous mode is on, with `k`
        no higher than that."""
        if needed >= 1 and (self.wanted is None or needed < self.wanted):
            if self.wanted is None:
                log.info("synchronous mode on for the cluster: an app asked for acks=%s", needed)
            self.wanted = needed
            self.acks.nudge()

    def acknowledge(self, seq: int) -> None:
        self.acknowledged = max(self.acknowledged, seq)

    def view(self) -> dict[str, Any] | None:
        """For status: the recorded set, and the quorum an election needs."""
        rec = self.recorded
        if rec is None:
            return None
        members = sorted(rec.members)
        return {"k": rec.k, "members": members, "election_quorum": rec.quorum}

    def members(self) -> set[str]:
        return set(self.recorded.members) if self.recorded else set()

    async def load_settings(self) -> ClusterSettings:
        """The cluster's settings (this node's own seed them if there are none yet)."""
        stored = await asyncio.to_thread(self.coord.cluster_settings)
        if stored is None:
            await asyncio.to_thread(self.coord.put_settings, self.seed)
            stored = self.seed
        elif self.seed != ClusterSettings() and self.seed != stored:
            log.warning(
                "this node's own settings differ from the cluster's, which apply: %s "
                "(sqlrepl config cluster changes them)",
                "; ".join(self.seed.differences(stored)),
            )
        self._take(stored)
        return stored

    async def change_settings(self, pairs: dict[str, str]) -> ClusterSettings:
        """Change the cluster's settings at run time (ConfigError: a bad one)."""
        new = self.settings.changed(pairs)
        await asyncio.to_thread(self.coord.put_settings, new)
        self._take(new)
        return new

    def _take(self, settings: ClusterSettings) -> None:
        """Lead by `settings` from now on (read again every SETTINGS_EVERY seconds: the
        waiters and the min-sync-replicas check are woken only when they changed)."""
        self._settings_read = time.monotonic()
        if settings.sync_acks >= 1:
            self.want(settings.sync_acks)
        if settings != self.settings:
            log.info("cluster settings: %s", settings.dump())
            self.settings = settings
            self.acks.nudge()

    async def run(self) -> None:
        """Keep the recorded set what the followers and the asked `k` call for, and the
        cluster's settings fresh (another node may change them)."""
        previous = await asyncio.to_thread(self.coord.sync_set)
        if previous is not None and self.wanted is None:
            self.wanted = previous.k  # the cluster is in synchronous mode: it stays so
        while True:
            if time.monotonic() - self._settings_read > SETTINGS_EVERY:
                with contextlib.suppress(SqlreplError):
                    stored = await asyncio.to_thread(self.coord.cluster_settings)
                    self._take(stored or self.settings)
            if self.head.epoch != self._epoch:
                self._epoch, self.recorded = self.head.epoch, None
                self.acknowledged = max(self.acknowledged, self.head.position.seq)
            wanted = self.desired(time.monotonic())
            if wanted is not None and wanted != self.recorded:
                await self._record(wanted)
            moved = self.acks.moved
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(LOOK_EVERY):
                    await moved.wait()

    def desired(self, now: float) -> SyncSet | None:
        """The set to record now (None: nothing to record yet)."""
        if self.wanted is None:
            return None
        at = self.acks.at
        within = self.drop_after
        connected = {n for n in self.voters() if n in at and self.acks.connected(n, within, now)}
        held = {n: at[n][1] for n in at}
        if self.recorded is None:
            first = {n: at[n][0] for n in connected if held[n] >= self.acknowledged}
            if not first:
                return None
            return SyncSet(self.head.epoch, self.node, self.wanted, first)
        members = dict(self.recorded.members)
        members.update({n: at[n][0] for n in connected})
        for node in sorted(members):
            if node in connected:
                continue
            mine = {m: held.get(m, -1) for m in members}
            if may_drop(node, mine, self.wanted, self.acknowledged):
                del members[node]
        return SyncSet(self.head.epoch, self.node, self.wanted, members)

    async def _record(self, wanted: SyncSet) -> None:
        before = self.recorded
        self._leaving = set(before.members) - set(wanted.members) if before else set()
        try:
            done = await asyncio.to_thread(self.coord.record_sync, wanted)
        except SqlreplError as exc:
            done, why = False, str(exc)
        else:
            why = "this node no longer holds the leader key"
        if not done:
            self._leaving = set()
            said = f"synchronous commits wait: the sync set cannot be recorded ({why})"
            if said != self.problem:
                log.warning("%s", said)
            self.problem = said
            return
        self.recorded, self._leaving, self.problem = wanted, set(), None
        log.info("sync set recorded: %s", wanted.describe())
        self.acks.nudge()
