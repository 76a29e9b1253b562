"""What each follower acknowledged (from its pulls), and whether it is connected: the
leader's side of synchronous commits, kept in memory only."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator

#: The followers that vote, asked anew each time.
Voters = Callable[[], set[str]]


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
        self.nudge()

    def nudge(self) -> None:
        """Wake whoever waits for acknowledgements to look again."""
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
