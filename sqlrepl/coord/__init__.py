"""Coordination: who may lead, behind one interface, chosen by URL scheme.

    static                                   (default) the operator decides: promote,
                                             switchover; no lease can lapse
    etcd://HOST:PORT[,HOST:PORT]/CLUSTER     automatic failover: a leader key bound to a
                                             lease (the Patroni model)

A daemon makes one `Coordinator` with `from_url` at start and keeps it through its role
changes (a follower that wins the key goes on leading with the same lease). Settings hold
the URL and the TTL, never a live client; nothing outside a backend asks which backend
it is.

Blocking calls: run them in a thread. Errors: `PeerUnavailable` when the coordinator
cannot be reached, `ConfigError` for a bad URL or settings that differ from the cluster's.
"""

from __future__ import annotations

from typing import Any, Protocol

from ..config import DEFAULT_TTL, STATIC
from ..core.cluster import ClusterSettings
from ..core.quorum import SyncSet
from ..errors import ConfigError


class Lease(Protocol):
    """Who may lead: the leader key and its lease."""

    #: "static" or "etcd" (shown in status).
    name: str
    #: Does the HA loop run (automatic failover)?
    automatic: bool

    @property
    def loop_wait(self) -> float:
        """Seconds between HA cycles (and lease renewals)."""

    def check_config(self, cluster: str | None, fresh: bool = False) -> None:
        """Refuse settings that differ from the cluster's, and a coordinator that serves
        another cluster than `cluster` (the file's identity, None if it has none yet;
        `fresh`: a new leader file, which may only start a cluster nobody serves yet)."""

    def acquire(self, info: dict[str, Any], floor: int) -> int | None:
        """Take leadership for `info` ({"url", "node", "cluster"}); return the new epoch,
        always above `floor`, or None if another node holds it."""

    def renew(self) -> bool:
        """Keep the lease; False if it is gone. PeerUnavailable: no answer."""

    def holds_lease(self) -> bool:
        """Does this node believe it holds the leader lease?"""

    def lease_may_have_expired(self) -> bool:
        """Might the lease have lapsed in the coordinator by now (own clock)?"""

    def release(self) -> None:
        """Give leadership up at once (handover, shutdown, step-down)."""

    def leader(self) -> dict[str, Any] | None:
        """The current leader's info with its "epoch", or None if nobody holds it."""

    def confirm(self, url: str, epoch: int) -> bool:
        """Does the coordinator confirm that `url` leads `epoch`? (followers check a newer
        epoch before they accept it)"""


class Records(Protocol):
    """What the members publish for one another, kept with the cluster."""

    def publish(self, node: str, info: dict[str, Any]) -> None:
        """Publish this node's URL and position for candidates comparing themselves."""

    def members(self) -> list[dict[str, Any]]:
        """What the cluster's members published."""

    def publish_head(self, head: dict[str, Any]) -> None:
        """The leader's newest position ({"epoch", "seq", "url"}), published with its lease
        renewals and kept after it dies: candidates measure their lag against it."""

    def head(self) -> dict[str, Any] | None:
        """The newest head a leader published (None: none yet)."""

    def record_sync(self, sync: SyncSet) -> bool:
        """Record the sync set of synchronous commits (`core.quorum`) if this node still
        holds the leadership it acquired; False if it does not."""

    def sync_set(self) -> SyncSet | None:
        """The sync set last recorded (None: the cluster never committed synchronously)."""

    def cluster_settings(self) -> ClusterSettings | None:
        """The cluster's settings (None: no node has seeded them yet)."""

    def put_settings(self, settings: ClusterSettings) -> None:
        """Store the cluster's settings (the leader: seeding them, or changed at run time)."""

    def carry(self, settings: ClusterSettings) -> None:
        """Settings a leader sent with a batch: kept where the coordinator stores none
        itself (static), so this node leads by them once promoted."""


class Coordinator(Lease, Records, Protocol):
    """One node's view of the cluster's coordination."""


def from_url(url: str | None, ttl: int = DEFAULT_TTL) -> Coordinator:
    """The coordinator for `url` (None or "static": static coordination)."""
    if url is None or url in (STATIC, f"{STATIC}://"):
        from .static import Static

        return Static()
    if url.startswith("etcd://"):
        settings = _etcd_settings(url, ttl)
        from .etcd import Etcd

        return Etcd(settings)
    raise ConfigError(f"{url!r}: unknown coordinator (use etcd://HOST:PORT/CLUSTER or static)")


def _etcd_settings(url: str, ttl: int) -> Any:
    try:
        from . import gateway
    except ImportError as exc:  # etcd3gw is an optional dependency
        raise ConfigError(
            f"etcd coordination needs the etcd3gw package ({exc.name} is missing): "
            "pip install 'sqlrepl[etcd]'"
        ) from exc
    return gateway.parse(url, ttl)


__all__ = ["Coordinator", "Lease", "Records", "from_url"]
