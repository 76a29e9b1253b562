"""The leader's followers: where each is (the registry, from its pulls, for status) and
what each acknowledged (`Acks`, for synchronous commits).

Kept in memory only (the daemon writes nothing to the app's file in steady state): the
log bounds itself in the capture path (`--log-limit`), so trimming no longer waits for
followers, and one further behind than the log re-bootstraps from a snapshot. A
follower silent for longer than the retention drops out of the registry (and status);
the members it taught us stay in the members sidecar.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ...core.status import FollowerSeen
from ..members import Members
from .acks import Acks, Voters
from .syncset import SyncKeeper


class Retention:
    def __init__(
        self, retention: float, members: Members, sync: Callable[[Acks, Voters], SyncKeeper]
    ) -> None:
        self.members = members
        self.retention = retention
        #: node -> (url, seq, seen: time.time())
        self.followers: dict[str, tuple[str, int, float]] = {}
        #: Nodes that never vote: archives and non-candidates (they never lead).
        self.non_voters: set[str] = set()
        self.acks = Acks()
        #: Whose acknowledgements count (`sync`: built on these acknowledgements).
        self.sync = sync(self.acks, self.voters)

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
                sync=node in self.sync.members(),
            )
            for node, (url, seq, seen) in sorted(self.followers.items())
        ]
