"""The leader's follower registry: where each follower is, from its pulls.

Kept in memory only (the daemon writes nothing to the app's file in steady state): the
log bounds itself in the capture path (`--log-limit`), so trimming no longer waits for
followers, and one further behind than the log re-bootstraps from a snapshot. A
follower silent for longer than the retention drops out of the registry (and status);
the members it taught us stay in the members sidecar.
"""

from __future__ import annotations

import time
from typing import Any

from .members import Members


class Retention:
    def __init__(self, retention: float, members: Members) -> None:
        self.members = members
        self.retention = retention
        #: node -> (url, seq, seen: time.time())
        self.followers: dict[str, tuple[str, int, float]] = {}

    def register(self, node: str | None, url: str, seq: int) -> None:
        """A follower at `seq` asked for a batch or a snapshot."""
        if node:
            self.followers[node] = (url, seq, time.time())
            self.members.add([url])  # rewrites its file only when the URL is new

    def at(self, url: str) -> int | None:
        """The position of the follower known by `url` (None: not known)."""
        return max((seq for u, seq, _seen in self.followers.values() if u == url), default=None)

    def report(self, head: int) -> list[dict[str, Any]]:
        now = time.time()
        self.followers = {n: f for n, f in self.followers.items() if now - f[2] <= self.retention}
        return [
            {
                "node": node,
                "url": url,
                "seq": seq,
                "lag": max(head - seq, 0),
                "last_seen": round(now - seen, 3),
            }
            for node, (url, seq, seen) in sorted(self.followers.items())
        ]
