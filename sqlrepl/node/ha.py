"""The HA loop: every cycle builds a view, asks `core.decisions` what to do, carries it
out and logs the sentence that explains it (once, when it changes).

It runs only with a coordinator that fails over by itself (etcd). An unexpected error in
a leader's cycle is treated as "this node may not hold the lease": the gate closes
(retrying while an app holds the file's write lock) and the loop keeps cycling, so a
renewed lease reopens it. Nothing here ends silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any, Protocol

from ..coord import Coordinator
from ..core import decisions, quorum, roles
from ..core.decisions import Action, Do, FollowerView, LeaderView
from ..core.positions import Position
from ..core.roles import Transition
from ..errors import PeerUnavailable, SqlreplError
from . import discovery
from .follower.parts import HAFollower
from .leader.disk import DiskProbe
from .leader.gate import Leadership, WriteGate
from .leader.head import LogHead

log = logging.getLogger("sqlrepl.ha")
#: Shortest wait for a peer's status when comparing positions (else one HA cycle).
PEER_TIMEOUT = 1.0


class HALeader(Protocol):
    """What the HA loop asks of a leader."""

    @property
    def url(self) -> str: ...

    coord: Coordinator

    @property
    def node(self) -> str: ...

    meta: dict[str, Any]
    head: LogHead
    gate: WriteGate
    leadership: Leadership
    disk: DiskProbe

    async def step_down(self, reason: str, release: bool = True) -> None: ...
    async def take_epoch(self, epoch: int, why: str) -> None: ...
    def hand_over(self, transition: roles.Transition) -> None: ...


async def _run(
    cycle: Callable[[], Awaitable[str]],
    failed: Callable[[str], Awaitable[str]],
    every: float,
    said: decisions.Said | None = None,
) -> None:
    said = said or decisions.Said()
    while True:
        started = time.monotonic()
        try:
            sentence = await cycle()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not isinstance(exc, SqlreplError):
                log.exception("HA cycle failed unexpectedly")
            sentence = await failed(f"HA cycle failed: {exc}")
        if said.say(sentence):
            log.info("%s", sentence)
        # Cycles start every `every` seconds however long one took (slow links): a cycle
        # that overran starts the next at once.
        await asyncio.sleep(max(0.0, every - (time.monotonic() - started)))


async def run_leader(leader: HALeader) -> None:
    async def failed(why: str) -> str:
        try:
            await leader.step_down(why, release=False)
        except Exception:
            log.exception("could not close the write gate after a failed HA cycle")
        return f"{why}: this node may not hold the lease, write gate closed"

    await _run(lambda: leader_cycle(leader), failed, leader.coord.loop_wait)


async def run_follower(follower: HAFollower) -> None:
    async def failed(why: str) -> str:
        return why

    peers = Peers(2 * follower.config.ttl)
    every = follower.coord.loop_wait
    await _run(lambda: follower_cycle(follower, peers), failed, every, follower.election)


class Peers:
    """The candidates a follower's HA loop has seen in the coordinator, each remembered
    for `keep` seconds after it was last seen (its key may have lapsed with the leader's,
    e.g. in an etcd outage)."""

    def __init__(self, keep: float) -> None:
        self.keep = keep
        #: node -> (what it published, when seen: time.monotonic())
        self._seen: dict[str, tuple[dict[str, Any], float]] = {}

    def saw(self, members: list[dict[str, Any]], me: str, now: float) -> list[dict[str, Any]]:
        """Take the members listed now; every peer still remembered."""
        for member in members:
            node = str(member.get("node") or "")
            if node and node != me and member.get("url"):
                self._seen[node] = (member, now)
        self._seen = {n: (m, t) for n, (m, t) in self._seen.items() if now - t <= self.keep}
        return [m for m, _seen in self._seen.values()]


async def leader_view(leader: HALeader) -> LeaderView:
    coord = leader.coord
    base = LeaderView(
        leader.url,
        leader.head.epoch,
        leader.gate.is_open,
        decisions.NONE,
        handing_over=leader.leadership.handing_over,
        disk_error=leader.disk.error,
    )
    if coord.holds_lease():
        if coord.lease_may_have_expired():
            return replace(base, lease=decisions.EXPIRED)  # gate first, before any I/O
        try:
            alive = await asyncio.to_thread(coord.renew)
            renewal = decisions.ALIVE if alive else decisions.LOST
        except PeerUnavailable:
            renewal = decisions.UNREACHABLE
        if renewal == decisions.ALIVE and leader.leadership.leading:
            head = {"epoch": leader.head.epoch, "seq": leader.head.seq, "url": leader.url}
            with contextlib.suppress(PeerUnavailable):
                await asyncio.to_thread(coord.publish_head, head)
        expired = renewal != decisions.ALIVE and coord.lease_may_have_expired()
        lease = decisions.EXPIRED if expired else decisions.HELD
        return replace(base, lease=lease, renewal=renewal)
    holder = await asyncio.to_thread(coord.leader)
    return replace(base, holder=str(holder["url"]) if holder else None)


async def leader_cycle(leader: HALeader) -> str:
    action = decisions.decide_leader(await leader_view(leader))
    return await carry_out_leader(leader, action)


async def carry_out_leader(leader: HALeader, action: Action) -> str:
    if action.do is Do.STEP_DOWN:
        await leader.step_down(action.sentence.removeprefix("stepped down: "))
    elif action.do is Do.OPEN_GATE:
        await leader.gate.set(True)
    elif action.do is Do.FOLLOW:
        leader.hand_over(Transition("follower", action.target, "another node holds the lease"))
    elif action.do is Do.ACQUIRE:
        info = {"url": leader.url, "node": leader.node, "cluster": leader.meta["cluster"]}
        epoch = await asyncio.to_thread(leader.coord.acquire, info, leader.head.epoch)
        if epoch is None:
            return "lost the race for the lease"
        await leader.take_epoch(epoch, "acquired the leader lease")
        await leader.gate.set(True)
        return f"acquired the lease: leading epoch {epoch}"
    return action.sentence


async def follower_view(follower: HAFollower, peers: Peers) -> FollowerView:
    coord = follower.coord
    eligible, _ = follower.eligibility()
    # One round trip's time, not three: on a slow link to etcd the cycle stays short.
    head, holder, _published = await asyncio.gather(
        asyncio.to_thread(coord.head),
        asyncio.to_thread(coord.leader),
        asyncio.to_thread(coord.publish, follower.node, follower.member_info(eligible)),
    )
    follower.progress.saw_published(head)
    eligible, why_not = follower.eligibility()
    where = follower.progress.position
    view = FollowerView(
        url=follower.url,
        following=follower.leader,
        holder=holder,
        handing_over=follower.transition is not None,
        eligible=eligible,
        why_not=why_not,
        position=where,
    )
    if decisions.needs_peers(view) and where is not None:
        better, waiting = await weigh_peers(follower, peers, where, head)
        return replace(view, better_peer=better, waiting=waiting)
    return view


async def follower_cycle(follower: HAFollower, peers: Peers) -> str:
    action = decisions.decide_follower(await follower_view(follower, peers))
    if action.do is Do.REPOINT and action.target:
        follower.repoint(action.target)
    elif action.do is Do.ACQUIRE:
        where = follower.progress.position
        assert where is not None
        info = {"url": follower.url, "node": follower.node, "cluster": follower.cluster}
        epoch = await asyncio.to_thread(follower.coord.acquire, info, where.epoch)
        if epoch is None:
            return "no leader; another candidate won the race"
        await follower.become_leader(f"won the election at {where}", epoch)
        return f"won the election: leading epoch {epoch} from seq {where.seq}"
    return action.sentence


async def weigh_peers(
    follower: HAFollower, peers: Peers, mine: Position, head: dict[str, Any] | None
) -> tuple[str | None, str | None]:
    """An eligible candidate further ahead than `mine` (None: none), and what the rule of
    synchronous commits still waits for (`core.quorum`; None: nothing). Each peer and
    each member of the sync set is asked directly: one that does not answer in time
    counts as unheard for the rule, and with the position it last published for
    yielding (a slow peer is not assumed to be behind); one whose key expired lately is
    still remembered."""
    members, sync = await asyncio.gather(
        asyncio.to_thread(follower.coord.members), asyncio.to_thread(follower.coord.sync_set)
    )
    known = peers.saw(members, follower.node, time.monotonic())
    urls = {str(m["url"]) for m in known}
    if sync is not None:
        urls |= {u for n, u in sync.members.items() if n != follower.node}
    timeout = max(PEER_TIMEOUT, follower.coord.loop_wait)
    token, tls = follower.config.token, follower.config.client_tls
    order = sorted(urls)
    asked = await asyncio.gather(*(discovery.ask(u, token, timeout, tls) for u in order))
    answers = dict(zip(order, asked, strict=True))
    better = next(
        (
            str(m["url"])
            for m in known
            if decisions.further_ahead(answers.get(str(m["url"])) or m, mine, follower.node)
        ),
        None,
    )
    if sync is None:
        return better, None
    # An answer counts for the member it names (another node may answer at a URL now).
    heard = [a for a in asked if a is not None]
    return better, quorum.judge(sync, follower.node, mine, heard, head)
