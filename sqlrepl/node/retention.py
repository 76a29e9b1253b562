"""The leader's follower registry and log retention.

The leader remembers where each follower is (from its pulls), trims log entries that
every known follower has applied, and forgets followers silent for longer than the
retention (they re-bootstrap from a snapshot when they come back).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from ..core import capture
from .database import Database
from .members import Members

log = logging.getLogger("sqlrepl.leader")


class Retention:
    def __init__(self, db: Database, interval: float, retention: float, members: Members) -> None:
        self.db = db
        self.members = members
        self.interval = interval
        self.retention = retention
        #: node -> (url, seq, seen: time.time())
        self.followers: dict[str, tuple[str, int, float]] = capture.remember_followers(
            db.conn, {}, 0
        )

    def register(self, node: str | None, url: str, seq: int) -> None:
        """A follower at `seq` asked for a batch or a snapshot."""
        if node:
            self.followers[node] = (url, seq, time.time())
            if url not in self.members.urls:
                self.members.add([url])

    def at(self, url: str) -> int | None:
        """The position of the follower known by `url` (None: not known)."""
        return max((seq for u, seq, _seen in self.followers.values() if u == url), default=None)

    def report(self, head: int) -> list[dict[str, Any]]:
        now = time.time()
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

    async def run(self, head: Callable[[], int]) -> None:
        """Trim every `interval` seconds, for as long as the role lasts."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.trim(head())
            except Exception:
                log.exception("log trim failed; trying again in %ss", self.interval)

    async def trim(self, head: int) -> int:
        forget = time.time() - self.retention
        kept = await self.db.run(capture.remember_followers, self.db.conn, self.followers, forget)
        self.followers = kept
        upto = min((seq for _url, seq, _seen in kept.values()), default=head)
        return await self.db.run(capture.trim, self.db.conn, upto)
