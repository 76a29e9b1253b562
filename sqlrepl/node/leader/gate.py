"""May apps write to the leader's file? One owner for the answer.

    writable  ⇔  the file's gate is open  ∧  this node leads (not handing over, not
                 stepped down)  ∧  its lease is valid  ∧  no hold (too few sync replicas)
                 ∧  its disk takes writes

`WriteGate` alone opens, closes, holds and releases the file's gate (the guard triggers
of `core.gate`), and every endpoint asks it: `/status`, `/leader`, `/health`, `/metrics`,
`/batch` and `/wait` cannot disagree. `Leadership` is the one state that replaces the
booleans `leading` and `handing_over`.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable

import apsw

from ...core import gate
from ...errors import StorageError
from ..database import Database, close_gate_first
from .disk import DiskProbe

log = logging.getLogger("sqlrepl.leader")


class Role(enum.Enum):
    LEADING = "leading"
    #: The gate is closed for a handover; the target is catching up.
    HANDING_OVER = "handing over"
    #: The lease went to the handover's target.
    HANDED_OVER = "handed over"
    STEPPED_DOWN = "stepped down"


class Leadership:
    """Whether this node leads: changed only through these methods."""

    def __init__(self) -> None:
        self._role = Role.LEADING

    @property
    def role(self) -> Role:
        return self._role

    @property
    def leading(self) -> bool:
        """It ships batches and counts acknowledgements (also while a handover waits)."""
        return self._role in (Role.LEADING, Role.HANDING_OVER)

    @property
    def handing_over(self) -> bool:
        """A handover is under way: the HA loop leaves the gate and the lease to it."""
        return self._role in (Role.HANDING_OVER, Role.HANDED_OVER)

    def move(self, role: Role) -> bool:
        """Move to `role`; True if this node led before."""
        was = self.leading
        self._role = role
        return was


class WriteGate:
    """The file's write gate and the conditions that keep it shut."""

    def __init__(
        self,
        db: Database,
        leadership: Leadership,
        disk: DiskProbe,
        lease_valid: Callable[[], bool],
        hold: str | None = None,
    ) -> None:
        self._db, self._leadership, self._disk = db, leadership, disk
        self._lease_valid = lease_valid
        #: The file's real gate, as this daemon last set it.
        self._open = gate.is_open(db.conn)
        #: Whether the rest of the daemon wants it open (a hold may overrule it).
        self._wanted = self._open
        self._hold = hold

    @property
    def is_open(self) -> bool:
        """The file's guard lets app writes through (whatever the disk says)."""
        return self._open

    @property
    def hold(self) -> str | None:
        """Why the gate stays closed though this node leads (too few sync replicas)."""
        return self._hold

    def state(self) -> str:
        """What `/status` reports as `gate`: "open" only if app writes go through, which a
        disk that refuses writes stops whatever the guard says."""
        return "open" if self._open and self._disk.error is None else "closed"

    def writable(self) -> bool:
        return self.why_not_writable() is None

    def why_not_writable(self) -> str | None:
        """None if apps may write here now; else the first reason they may not."""
        if not self._leadership.leading:
            return self._leadership.role.value
        if self._disk.error is not None:
            return self._disk.error
        if self._hold is not None:
            return self._hold
        if not self._open:
            return "write gate closed"
        if not self._lease_valid():
            return "the leader lease may have lapsed"
        return None

    async def set(self, open_: bool, reason: str = "", held: bool = False) -> None:
        """Open or close the file's gate. Closing never gives up on a busy file: it tries
        again until the app lets go of the write lock, and closes the moment it does;
        opening a busy file is left to the next attempt. While a hold is set an opening is
        remembered and done when the hold lifts."""
        if not held:
            self._wanted = open_
        if open_ and self._hold is not None:
            return
        while True:
            try:
                if open_:
                    await self._db.run(gate.open_, self._db.conn)
                else:
                    await self._db.run(close_gate_first, self._db.conn, reason)
                break
            except apsw.BusyError:
                if open_:
                    log.warning("write gate not opened: the file is locked by an app")
                    return
                log.error(
                    "write gate NOT closed yet: an app holds the write lock; still trying (%s)",
                    reason,
                )
        self._open = open_
        log.warning("write gate %s%s", "opened" if open_ else "closed: ", reason)

    async def close_for_good(self, reason: str) -> None:
        """Close the gate as a node that stops leading: on a full disk, free the reserve
        first; a disk that refuses every write (the apps' too) is logged, not raised."""
        if not self._open:
            return
        try:
            await self.set(False, reason)
        except apsw.FullError:
            freed = await self._disk.free_reserve()
            log.error("the disk is full%s", ": reserve freed" if freed else "")
            try:
                await self.set(False, reason)
            except apsw.FullError as exc:
                raise StorageError(
                    "write gate NOT closed: the disk is full; keeping the lease so that no "
                    "other node takes writes while apps may still commit here"
                ) from exc
        except (apsw.ReadOnlyError, apsw.IOError) as exc:
            log.error("write gate NOT closed (%s): the disk refuses writes", exc)

    async def hold_shut(self, reason: str) -> None:
        """Keep the gate closed for `reason` (logged when it changes) until `release`."""
        if reason != self._hold:
            log.error("%s", reason)
        self._hold = reason
        if self._open:
            await self.set(False, reason, held=True)

    async def release(self, why: str) -> None:
        """Lift the hold; reopen the gate if it was wanted open and this node may lead."""
        if self._hold is None:
            return
        self._hold = None
        log.warning("%s", why)
        if self._wanted and self._leadership.leading and self._lease_valid():
            await self.set(True)
