"""Static coordination: the operator decides who leads (`promote`, `switchover`).

There is no lease that can lapse and no shared registry: a leader leads until it hands
over or is told it was deposed. What this node acquired it remembers, for the same
answers as every other backend gives about its own leadership.
"""

from __future__ import annotations

from typing import Any

from ..config import STATIC
from ..core.cluster import ClusterSettings
from ..core.quorum import SyncSet

#: Seconds between HA cycles: none run in static mode, but the interface names one.
LOOP_WAIT = 1.0


class StaticRecords:
    """What members publish, kept in this process (nobody else reads it in static mode)."""

    def __init__(self) -> None:
        self._members: dict[str, dict[str, Any]] = {}
        self._head: dict[str, Any] | None = None
        self._sync: SyncSet | None = None
        self._settings: ClusterSettings | None = None

    def publish(self, node: str, info: dict[str, Any]) -> None:
        self._members[node] = info

    def members(self) -> list[dict[str, Any]]:
        return list(self._members.values())

    def publish_head(self, head: dict[str, Any]) -> None:
        self._head = head

    def head(self) -> dict[str, Any] | None:
        return self._head

    def record_sync(self, sync: SyncSet) -> bool:
        """Kept in this process: no election reads it (the operator promotes)."""
        self._sync = sync
        return True

    def sync_set(self) -> SyncSet | None:
        return self._sync

    def cluster_settings(self) -> ClusterSettings | None:
        return self._settings

    def put_settings(self, settings: ClusterSettings) -> None:
        self._settings = settings

    def carry(self, settings: ClusterSettings) -> None:
        """Carried with the leadership: the leader's settings, for when this node leads."""
        self.put_settings(settings)


class Static(StaticRecords):
    name = STATIC
    automatic = False
    loop_wait = LOOP_WAIT

    def __init__(self) -> None:
        super().__init__()
        self._holder: dict[str, Any] | None = None

    def check_config(self, cluster: str | None, fresh: bool = False) -> None:
        return None

    def acquire(self, info: dict[str, Any], floor: int) -> int | None:
        """Granted by the operator's command: the next epoch."""
        epoch = floor + 1
        self._holder = {**info, "epoch": epoch}
        return epoch

    def renew(self) -> bool:
        return True

    def holds_lease(self) -> bool:
        return True

    def lease_may_have_expired(self) -> bool:
        return False

    def release(self) -> None:
        self._holder = None

    def leader(self) -> dict[str, Any] | None:
        return self._holder

    def confirm(self, url: str, epoch: int) -> bool:
        """Static followers take a newer epoch from the leader they were pointed at."""
        return True
