"""The leader's change loop: on every file event, keep capture in step with the schema
and publish the new head; no busy polling (file events wake it)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import apsw

from ... import config
from .ddl import Deferral
from .watch import DatabaseWatcher

log = logging.getLogger("sqlrepl.leader")


class ChangeLoop:
    """Owns the file watcher and whether apps keep the file locked (`locked`)."""

    def __init__(
        self,
        db: Path,
        deferral: Deferral,
        hurry: asyncio.Event,
        refresh: Callable[[], Awaitable[int]],
    ) -> None:
        self._db, self._deferral, self._hurry, self._refresh = db, deferral, hurry, refresh
        self._watcher = DatabaseWatcher(db)
        self._locked: str | None = None
        #: The error of the last look, if it failed for another reason (said once).
        self._failed: str | None = None

    @property
    def locked(self) -> str | None:
        """Set while apps keep the file locked past the busy timeout (status)."""
        return self._locked

    def start(self) -> None:
        self._watcher.start()

    def stop(self) -> None:
        self._watcher.stop()

    async def run(self) -> None:
        last_look = 0.0
        follow_ups: list[float] = []
        dirty = self._watcher.dirty
        while True:
            wait = self._deferral.next_look(config.RECHECK_INTERVAL)
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
            # that lands as the event fires, and this loop would then never end.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min([wait, *follow_ups[:1]])):
                    await dirty.wait()
            if dirty.is_set():
                self._deferral.wrote()
                # Under a stream of commits, at most one look (and one batch per follower)
                # per LOOK_INTERVAL_S: apps run faster beside the daemon. A commit after a
                # quiet spell is looked at at once, and so is one an app waits for (`hurry`).
                pause = last_look + config.LOOK_INTERVAL_S - time.monotonic()
                hurry = self._hurry
                if pause > 0:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(pause):
                            await hurry.wait()
                hurry.clear()
                last_look = time.monotonic()
                # A commit writes its WAL frames (the event) before it publishes them in
                # the shared-memory index (no event): look again shortly, or a look that
                # came in between would leave that commit unseen until the next write.
                follow_ups = list(config.FOLLOW_UP_LOOKS_S)
            elif follow_ups:
                follow_ups.pop(0)
            dirty.clear()
            self._watcher.rearm()  # writes from here on wake the next look
            await self._look()

    async def _look(self) -> None:
        try:
            await self._refresh()
            if self._locked is not None:
                log.warning("%s can be read again", self._db)
            if self._failed is not None:
                log.warning("capture looks at %s again", self._db)
            self._locked = self._failed = None
        except (apsw.SQLError, apsw.SchemaChangeError) as exc:
            # An app dropped or altered sqlrepl's tables between two reads of one look:
            # the next look sees the schema change and rebuilds them. Never exit for it.
            if str(exc) != self._failed:
                log.warning("capture's look at %s failed (%s); looking again", self._db, exc)
            self._failed = str(exc)
            await asyncio.sleep(config.BACKOFF_MIN)
            self._watcher.dirty.set()
        except apsw.BusyError:
            # Apps held the lock for the whole busy timeout: say so, look again soon.
            if self._locked is None:
                self._locked = (
                    f"{self._db} stays locked by another connection (an app in "
                    "PRAGMA locking_mode=EXCLUSIVE, or one holding a transaction open?): "
                    "nothing new is replicated until it lets go"
                )
                log.error("%s", self._locked)
            self._watcher.dirty.set()
