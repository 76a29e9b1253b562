"""When the leader brings capture in step with a schema change: not at once, but once the
file has been quiet for a moment, and at most a bounded time after the change was seen.

Bringing capture in step is a write to the app's file (triggers for new tables, the
table registry, a marker in the log). Any commit by another connection makes an app's
deferred transaction that has already read fail on its first write (`database is
locked`; busy timeouts do not retry it), and apps that create a table usually write to
it at once. So the daemon waits until the file has had no commit for `QUIET_S`, or
until `LONGEST_S` passed since it saw the change. Meanwhile nothing is lost: rows written
to a table without triggers yet are shipped whole when its capture is installed, and
batches wait (a batch never mixes schemas).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import apsw

from ...core import capture, internals
from ...core.db import schema_version
from . import identity

log = logging.getLogger("sqlrepl.leader")

#: The file must have had no commit for this long before the daemon writes to it.
QUIET_S = 0.3
#: The longest a schema change waits for a quiet moment.
LONGEST_S = 10.0


class Deferral:
    def __init__(self, quiet: float = QUIET_S, longest: float = LONGEST_S) -> None:
        self.quiet, self.longest = quiet, longest
        #: time.monotonic() of the first sight of a change capture is not in step with.
        self.pending_since: float | None = None
        #: time.monotonic() of the latest commit seen on the file.
        self.last_write = time.monotonic()

    @property
    def pending(self) -> bool:
        return self.pending_since is not None

    def wrote(self) -> None:
        """The file changed (a file event)."""
        self.last_write = time.monotonic()

    def due(self) -> bool:
        """A schema change was seen (now, or before): may the daemon write now?"""
        now = time.monotonic()
        if self.pending_since is None:
            self.pending_since = now
        return now - self.last_write >= self.quiet or now - self.pending_since >= self.longest

    def done(self) -> None:
        self.pending_since = None

    def next_look(self, otherwise: float) -> float:
        """How long the change loop may sleep before it looks again."""
        return min(self.quiet, otherwise) if self.pending else otherwise


class SchemaSync:
    """Keeps capture in step with the file's schema, and owns what it finds: the schema
    version capture is in step with, what cannot be replicated, and whether an app
    dropped sqlrepl's own tables. Its methods run in the database thread."""

    def __init__(
        self,
        conn: apsw.Connection,
        identity_now: Callable[[], tuple[dict[str, Any], int]],
        log_limit: int,
    ) -> None:
        #: When capture catches up with a schema change (a write): at a quiet moment.
        self.deferral = Deferral()
        self._version = schema_version(conn)
        #: (the meta to rebuild sqlrepl's tables with, the log's head) at this moment.
        self._identity_now = identity_now
        self._log_limit = log_limit
        #: sqlrepl's tables an app dropped, not rebuilt yet (say so until they are).
        self._tampered: str | None = None
        #: The last rebuild: what was said, the head the log went on from, and when.
        self.rebuilt: tuple[str, int, float] | None = None
        self._problems: list[str] = []

    @property
    def problems(self) -> list[str]:
        """What the schema holds that sqlrepl cannot replicate, and tables an app dropped
        that are not rebuilt yet."""
        return [*self._problems, *([self._tampered] if self._tampered else [])]

    def catch_up(self, conn: apsw.Connection, now: bool = False) -> bool:
        """Bring capture in step with a schema change once the deferral says it is due
        (or `now`); False while it waits. A look at an unchanged schema reads one pragma,
        nothing more."""
        version = schema_version(conn)
        if version == self._version and not self.deferral.pending:
            return True
        if version != self._version:
            self._rebuild_if_dropped(conn)
        if capture.schema_moved(conn):
            if not now and not self.deferral.due():
                return False
            if capture.sync_capture(conn):
                log.info("schema changed: capture re-synced")
                self.report_problems(conn)
        self.deferral.done()
        # The version this look acted on, not the one after it: a change an app made
        # meanwhile (a migration drops its tables one statement at a time) is looked at
        # again (our own writes cost one more look that finds nothing to do).
        self._version = version
        return True

    def _rebuild_if_dropped(self, conn: apsw.Connection) -> None:
        missing = internals.missing_internals(conn)
        if not missing:
            identity.put_back_extras(conn)  # (a rebuild puts back everything)
            return
        # Said (status) from now until rebuilt: an app holding the file's write lock (a
        # migration's failed transaction left open) delays the rebuild, never stops it.
        self._tampered = identity.dropped(missing) + "; rebuilding as soon as the file allows"
        meta, head = self._identity_now()
        said = identity.rebuild(conn, missing, meta, head, self._log_limit)
        self._tampered, self.rebuilt = None, (said, head, time.monotonic())

    def report_problems(self, conn: apsw.Connection) -> None:
        """Say loudly, after every schema sync, what cannot be replicated."""
        self._problems = capture.problems(conn)
        for problem in self._problems:
            log.error("%s", problem)
