"""What a follower knows of itself and its leader, for /status. Owned by the replication
loop (`Replicator`), which alone changes it; the rest of the node reads it."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from ...core.positions import Position
from ...core.status import Problem
from .. import freshness

log = logging.getLogger("sqlrepl.follower")


@dataclass
class Meter:
    """Bytes done of a transfer, for status and logs."""

    done: int = 0
    total: int = 0
    started: float = field(default_factory=time.monotonic)

    logged: float = 0.0

    def view(self) -> dict[str, Any]:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        return {"done": self.done, "total": self.total, "bytes_per_s": round(self.done / elapsed)}

    def report(self, done: int, total: int) -> None:
        """A `Progress` callback: keep the figures; log them every 2 s and at the end."""
        self.done, self.total = done, total
        now = time.monotonic()
        if now - self.logged >= 2 or done == total:
            self.logged = now
            rate = self.view()["bytes_per_s"] / 2**20
            log.info("snapshot: %d of %d bytes (%.0f MiB/s)", done, total, rate)


#: A failure that repeats this many times in a row, or for this long, lasts: status,
#: /health and /metrics name it (a single retry does not).
LASTING_TRIES, LASTING_S = 3, 10.0
#: A batch that fails to apply this many times at the same position, for this long,
#: cannot be applied here: the follower re-bootstraps from a snapshot (the time leaves a
#: glitch room to pass, and status room to show it).
UNAPPLIABLE_TRIES, UNAPPLIABLE_S = 3, 5.0


@dataclass
class Trouble:
    """The failure the follower meets now: logged once when it starts, counted while it
    repeats (logged again at 10, 100, … tries), summed up when it ends."""

    message: str | None = None
    count: int = 0
    since: float = 0.0
    #: The last failure that lasted, once it ended (status: what happened, and when).
    last: Problem | None = None

    def note(self, message: str) -> None:
        if message != self.message:
            self.clear()
            self.message, self.count, self.since = message, 0, time.time()
            log.warning("%s; retrying", message)
        self.count += 1
        if self.count >= 10 and str(self.count).strip("0") == "1":
            log.warning("%s (%d tries so far, since %s)", message, self.count, _clock(self.since))

    def clear(self) -> None:
        if self.message is not None and self.count > 1:
            log.info("ended after %d tries: %s", self.count, self.message)
        if self.lasting:
            self.last = Problem(**(self.view() or {}), ended=round(time.time(), 3))
        self.message, self.count = None, 0

    def given_up(self) -> bool:
        """Has the failure repeated long enough to give the batch up?"""
        long = time.time() - self.since >= UNAPPLIABLE_S
        return self.count >= UNAPPLIABLE_TRIES and long

    @property
    def lasting(self) -> bool:
        return self.message is not None and (
            self.count >= LASTING_TRIES or time.time() - self.since >= LASTING_S
        )

    def view(self) -> Problem | None:
        """For status and /health: the lasting failure, with its count and start."""
        if not self.lasting:
            return None
        return Problem(cause=self.message, tries=self.count, since=round(self.since, 3))


def _clock(at: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(at))


@dataclass
class Progress:
    """What the follower knows of itself and its leader, for /status."""

    position: Position | None = None
    leader_head: int | None = None
    #: The newest head a leader published to the coordinator (etcd), on our epoch or later:
    #: a follower cut off from its leader still learns how far behind it is.
    published_head: int | None = None
    last_contact: float | None = None
    #: The last instant this follower knew it held everything its leader had.
    fresh_at: float | None = None
    started: float = field(default_factory=time.time)
    state: str = "starting"
    #: The failure met now (`error` in status), and how long it has lasted.
    trouble: Trouble = field(default_factory=Trouble)
    #: A snapshot download under way: bytes done of how many.
    transfer: Meter | None = None

    @property
    def error(self) -> str | None:
        """The failure met now, if any (until a pull or a bootstrap succeeds)."""
        return self.trouble.message

    def ok(self) -> None:
        """A pull or a bootstrap succeeded: the failure, if any, is over."""
        self.trouble.clear()

    def saw_leader(self, head: int) -> None:
        now = time.time()
        self.leader_head = head
        self.last_contact = now
        if self.position is not None and self.position.seq >= (self.known_head or 0):
            self.fresh_at = now

    def saw_published(self, head: dict[str, Any] | None) -> None:
        """Take the head the leader last published (ignored if from an older epoch)."""
        seq, epoch = (head or {}).get("seq"), int((head or {}).get("epoch") or 0)
        ours = self.position is not None and epoch >= self.position.epoch
        self.published_head = int(seq) if ours and seq is not None else None

    @property
    def known_head(self) -> int | None:
        """The newest head of the leader this follower knows of, from any source."""
        heads = [h for h in (self.leader_head, self.published_head) if h is not None]
        return max(heads) if heads else None

    def lag(self) -> int:
        """Changes behind the newest head known (0 before anything is known)."""
        seq = self.position.seq if self.position else 0
        return max((self.known_head or 0) - seq, 0)

    def lag_seconds(self, now: float, keepalive: float) -> float:
        """How old the newest state this follower knows it holds is: 0 while it was caught
        up at its last contact, no older than one keep-alive, and knows of nothing newer;
        otherwise the time since it last was (it grows while the leader is out of reach)."""
        since = self.fresh_at if self.fresh_at is not None else self.started
        lag = freshness.lag_seconds(since, self.fresh_at is None or self.lag() > 0, keepalive, now)
        return lag if lag is not None else round(now - since, 3)
