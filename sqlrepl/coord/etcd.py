"""etcd coordination: the leader key bound to a lease, member keys, and the settings check.

    --coordinator etcd://HOST:PORT[,HOST:PORT]/NAME

Keys live under /sqlrepl/NAME/: `leader` ({"url", "node", "cluster", "epoch"}, bound to
the leader's lease), `members/NODE` (each node's position, bound to its own lease),
`config` ({"ttl"}, written once: every node must agree), `head` ({"epoch", "seq",
"url"}: the leader's newest position, published with its renewals and kept after it
dies, so candidates measure their lag against it), and `sync` (the sync set of
synchronous commits, `core.quorum`: written only while the writer's leader key holds
the value it wrote, in one transaction), and `settings` (the cluster's own settings,
`core.cluster`). All calls go through etcd3gw's
HTTP gateway client with a request timeout and try each endpoint in turn; the watch
threads of etcd3gw are never used (a lost lease is judged by our own clock).
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import etcd3gw

from ..core.cluster import ClusterSettings
from ..core.quorum import SyncSet
from ..errors import ConfigError, PeerUnavailable
from .gateway import RENEW_PAUSE, Endpoints, Settings, refresh

log = logging.getLogger("sqlrepl.etcd")


class EtcdRecords:
    """The keys members publish for one another (`coord.Records`): members, the head,
    the sync set."""

    settings: Settings
    _etcd: Endpoints
    lease_id: int | None
    _member_lease: int | None
    _head: dict[str, Any] | None
    _leader_value: str | None

    def publish(self, node: str, info: dict[str, Any]) -> None:
        """This node's URL and position, for candidates comparing themselves (the key
        expires with the TTL when the node stops publishing)."""
        member = self._member_lease
        if member is None or self._etcd.call(lambda c: etcd3gw.Lease(member, c).refresh()) <= 0:
            member = self._member_lease = self._etcd.call(lambda c: c.lease(self.settings.ttl)).id
        lease = etcd3gw.Lease(member, self._etcd.clients[0])
        key = self.settings.key("members", node)
        self._etcd.call(lambda c: c.put(key, json.dumps(info), lease=lease))

    def members(self) -> list[dict[str, Any]]:
        prefix = self.settings.key("members", "")
        return [json.loads(v) for v, _meta in self._etcd.call(lambda c: c.get_prefix(prefix))]

    def publish_head(self, head: dict[str, Any]) -> None:
        """Kept without a lease: it outlives the leader, so a candidate cut off from it
        still learns how far it had got (Patroni's /optime/leader)."""
        if head != self._head:
            key = self.settings.key("head")
            self._etcd.call(lambda c: c.put(key, json.dumps(head)))
            self._head = head

    def head(self) -> dict[str, Any] | None:
        found = self._etcd.call(lambda c: c.get(self.settings.key("head")))
        return dict(json.loads(found[0])) if found else None

    def record_sync(self, sync: SyncSet) -> bool:
        """Put the sync set, compared in the same transaction with the leader key's value
        as this node wrote it: a deposed leader's late write changes nothing."""
        held = self._leader_value
        if held is None or self.lease_id is None:
            return False
        leader, key = _b64(self.settings.key("leader")), _b64(self.settings.key("sync"))
        txn = {
            "compare": [{"key": leader, "result": "EQUAL", "target": "VALUE", "value": _b64(held)}],
            "success": [{"request_put": {"key": key, "value": _b64(sync.dump())}}],
            "failure": [],
        }
        return bool(self._etcd.call(lambda c: c.transaction(txn)).get("succeeded"))

    def sync_set(self) -> SyncSet | None:
        found = self._etcd.call(lambda c: c.get(self.settings.key("sync")))
        return SyncSet.load(found[0]) if found else None

    def cluster_settings(self) -> ClusterSettings | None:
        found = self._etcd.call(lambda c: c.get(self.settings.key("settings")))
        return ClusterSettings.load(found[0]) if found else None

    def put_settings(self, settings: ClusterSettings) -> None:
        key = self.settings.key("settings")
        self._etcd.call(lambda c: c.put(key, settings.dump()))

    def carry(self, settings: ClusterSettings) -> None:
        """Nothing to keep: every node reads the cluster's settings from etcd."""


@dataclass
class Etcd(EtcdRecords):
    """One node's view of the cluster in etcd (a `coord.Coordinator`). Blocking calls: run
    them in a thread."""

    settings: Settings
    name = "etcd"
    automatic = True
    lease_id: int | None = None
    #: time.monotonic() at which the last successful renewal (or grant) was *sent*.
    last_good_send: float = 0.0
    _member_lease: int | None = None
    _head: dict[str, Any] | None = None
    _warned: float = -1e9
    #: The leader key's value as this node wrote it (a sync set is recorded only while
    #: the key still holds it).
    _leader_value: str | None = None

    def __post_init__(self) -> None:
        self._etcd = Endpoints(self.settings)

    @property
    def loop_wait(self) -> float:
        return self.settings.loop_wait

    def holds_lease(self) -> bool:
        return self.lease_id is not None

    def confirm(self, url: str, epoch: int) -> bool:
        holder = self.leader()
        return holder is not None and holder.get("epoch") == epoch and holder.get("url") == url

    def check_config(self, cluster: str | None, fresh: bool = False) -> None:
        """Every node of a cluster must use the same TTL, and one etcd name serves one
        sqlrepl cluster: the first node records both."""
        key = self.settings.key("config")
        mine = {"ttl": self.settings.ttl, "cluster": cluster}
        self._etcd.call(lambda c: c.create(key, json.dumps(mine)))
        theirs = json.loads(self._etcd.call(lambda c: c.get(key))[0])
        if theirs.get("ttl") != self.settings.ttl:
            raise ConfigError(
                f"--ttl {self.settings.ttl} differs from the cluster's {theirs.get('ttl')}"
            )
        recorded = theirs.get("cluster")
        if recorded and (fresh or (cluster and cluster != recorded)):
            mine_ = "a new cluster" if fresh else f"cluster {cluster}"
            raise ConfigError(
                f"etcd cluster name {self.settings.name!r} already serves sqlrepl cluster "
                f"{recorded}; this file belongs to {mine_}: refusing to touch it"
            )
        if cluster and not recorded:
            self._etcd.call(lambda c: c.put(key, json.dumps({**theirs, "cluster": cluster})))

    def leader(self) -> dict[str, Any] | None:
        """The leader key's value (with its create revision), or None if there is none."""
        found = self._etcd.call(lambda c: c.get(self.settings.key("leader"), metadata=True))
        if not found:
            return None
        value, meta = found[0]
        return {**json.loads(value), "revision": int(meta["create_revision"])}

    def acquire(self, info: dict[str, Any], floor: int) -> int | None:
        """Take the leader key if nobody holds it; return the new epoch (the key's create
        revision, or floor + 1 if that is higher), or None if someone else leads."""
        sent = time.monotonic()
        lease = self._etcd.call(lambda c: c.lease(self.settings.ttl))
        key = self.settings.key("leader")
        if not self._etcd.call(lambda c: c.create(key, json.dumps(info), lease=lease)):
            self._etcd.call(lambda c: lease.revoke())
            return None
        try:
            found = self._etcd.call(lambda c: c.get(key, metadata=True))
            epoch = max(int(found[0][1]["create_revision"]), floor + 1)
            value = json.dumps({**info, "epoch": epoch})
            self._etcd.call(lambda c: c.put(key, value, lease=lease))
        except Exception:
            self._etcd.call(lambda c: lease.revoke())  # give the half-taken key back
            raise
        self.lease_id, self.last_good_send = lease.id, sent
        self._leader_value = value
        return epoch

    def renew(self) -> bool:
        """Refresh the leader lease; True if it is still alive.

        A failed attempt is tried again at once, at every endpoint together, for as long
        as an attempt can still end before the step-down point: a lost request or etcd
        electing a new raft leader (a second or two without answers) costs no step-down.
        """
        if self.lease_id is None:
            return False
        lease_id = self.lease_id
        deadline = self.last_good_send + self.settings.step_down_after
        while True:
            sent = time.monotonic()
            # Each attempt may use what is left before the step-down point (etcd's new raft
            # leader answers in a fraction of a second once elected).
            left = min(self.settings.request_timeout, deadline - sent)
            try:
                ttl = self._etcd.call_any(
                    functools.partial(refresh, lease_id), timeout=max(left, RENEW_PAUSE)
                )
                break
            except PeerUnavailable:
                if time.monotonic() + RENEW_PAUSE >= deadline:
                    raise
                time.sleep(RENEW_PAUSE)
        took = time.monotonic() - sent
        if took > self.settings.request_timeout / 2 and sent - self._warned > 60:
            self._warned = sent
            log.warning(
                "a lease renewal took %.0f ms (timeout %.0f ms): with --ttl %s a slower link "
                "makes this leader step down; raise --ttl (about 10 round trips to etcd fit)",
                took * 1000,
                self.settings.request_timeout * 1000,
                self.settings.ttl,
            )
        if ttl > 0:
            self.last_good_send = sent
            return True
        self.lease_id = None
        return False

    def lease_may_have_expired(self) -> bool:
        return time.monotonic() - self.last_good_send >= self.settings.step_down_after

    def release(self) -> None:
        """Give the leader key up at once (clean shutdown, handover)."""
        if self.lease_id is not None:
            lease_id, self.lease_id = self.lease_id, None
            self._etcd.call(lambda c: etcd3gw.Lease(lease_id, c).revoke())


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()
