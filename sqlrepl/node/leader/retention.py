"""The leader's followers: where each is (the registry, from its pulls, for status) and
what each acknowledged (`Acks`, for synchronous commits).

Kept in memory only (the daemon writes nothing to the app's file in steady state): the
log bounds itself in the capture path (`--log-limit`), so trimming no longer waits for
followers, and one further behind than the log re-bootstraps from a snapshot. A
follower silent for longer than the retention drops out of the registry (and status);
the members it taught us stay in the members sidecar.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator

from ...core.status import FollowerSeen
from ..members import Members


class Retention:
    def __init__(self, retention: float, members: Members) -> None:
        self.members = members
        self.retention = retention
        #: node -> (url, seq, seen: time.time())
        self.followers: dict[str, tuple[str, int, float]] = {}
        #: Nodes that never vote: archives (they acknowledge nothing and never lead).
        self.non_voters: set[str] = set()
        self.acks = Acks()

    def register(self, node: str | None, url: str, seq: int, voter: bool | None = None) -> None:
        """A follower at `seq` asked for a batch (`voter`: whether it is a replica that may
        acknowledge and lead, not an archive) or a snapshot (None: as it said before)."""
        if node:
            self.followers[node] = (url, seq, time.time())
            self.members.add([url])  # rewrites its file only when the URL is new
            if voter is not None:
                (self.non_voters.discard if voter else self.non_voters.add)(node)

    def voters(self) -> set[str]:
        """The followers known (within the retention) that vote: what `acks=majority` is
        a majority of."""
        self._forget_silent()
        return {node for node in self.followers if node not in self.non_voters}

    def _forget_silent(self) -> None:
        """Forget the followers not heard from within the retention."""
        now = time.time()
        self.followers = {n: f for n, f in self.followers.items() if now - f[2] <= self.retention}

    def at(self, url: str) -> int | None:
        """The position of the follower known by `url` (None: not known)."""
        return max((seq for u, seq, _seen in self.followers.values() if u == url), default=None)

    def report(self, head: int) -> list[FollowerSeen]:
        self._forget_silent()
        now = time.time()
        return [
            FollowerSeen(
                node=node,
                url=url,
                seq=seq,
                lag=max(head - seq, 0),
                last_seen=round(now - seen, 3),
                voter=node not in self.non_voters,
            )
            for node, (url, seq, seen) in sorted(self.followers.items())
        ]


class Acks:
    """What each follower acknowledged (from its pulls), and whether it is connected."""

    def __init__(self) -> None:
        #: node -> (url, seq, when: time.monotonic())
        self.at: dict[str, tuple[str, int, float]] = {}
        #: node -> the last instant it held the leader's head
        self.fresh_at: dict[str, float] = {}
        #: node -> pulls it has waiting at the leader now
        self.polling: dict[str, int] = {}
        self.moved = asyncio.Event()
        #: Set by a `wait` for a seq past the head: cuts the leader's pause between looks.
        self.hurry = asyncio.Event()

    def pulled(self, node: str | None, url: str, seq: int, head: int) -> None:
        if not node:
            return
        now = time.monotonic()
        self.at[node] = (url, seq, now)
        if seq >= head:
            self.fresh_at[node] = now
        self.moved.set()
        self.moved = asyncio.Event()

    @contextlib.contextmanager
    def waiting(self, node: str | None) -> Iterator[None]:
        """A pull of `node` held at the leader: it is connected meanwhile."""
        if node:
            self.polling[node] = self.polling.get(node, 0) + 1
        try:
            yield
        finally:
            if node:
                self.polling[node] -= 1

    def holding(self, seq: int, nodes: set[str]) -> list[str]:
        """URLs of the followers among `nodes` whose files hold seq."""
        return [url for n, (url, s, _) in self.at.items() if s >= seq and n in nodes]

    def short_of(self, seq: int, within: float) -> list[str]:
        """Followers connected within `within` seconds whose files do not hold `seq` yet."""
        now = time.monotonic()
        return [n for n, (_, s, _) in self.at.items() if s < seq and self.connected(n, within, now)]

    def connected(self, node: str, within: float, now: float) -> bool:
        """A pull of `node` waits at the leader now, or came within `within` seconds."""
        return self.polling.get(node, 0) > 0 or now - self.at[node][2] <= within

    def behind(self, node: str, head: int, now: float) -> float:
        """Seconds since `node` last held the head (0 while it holds it)."""
        if self.at[node][1] >= head:
            return 0.0
        return now - self.fresh_at.get(node, float("-inf"))

    def fresh(self, head: int, max_lag: float) -> list[str]:
        """Followers connected now (a pull waiting, or one within `max_lag` seconds) and
        no more than `max_lag` seconds behind the head."""
        now = time.monotonic()
        return [
            node
            for node in self.at
            if self.connected(node, max_lag, now) and self.behind(node, head, now) <= max_lag
        ]

    async def wait_for(
        self, seq: int, nodes: Callable[[], set[str]], needed: int, timeout: float
    ) -> list[str]:
        """Wait (up to `timeout`) until `needed` of `nodes()` hold seq; who does at the
        end. The nodes are asked again at each acknowledgement: a follower that joins
        meanwhile (just after a promotion) counts."""
        deadline = time.monotonic() + timeout
        while len(have := self.holding(seq, nodes())) < needed:
            left = deadline - time.monotonic()
            if left <= 0:
                return have
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await self.moved.wait()
        return have
