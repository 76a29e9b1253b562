"""etcd coordination: the leader key bound to a lease, member keys, and the settings check.

    --coordinator etcd://HOST:PORT[,HOST:PORT]/NAME

Keys live under /sqlrepl/NAME/: `leader` ({"url", "node", "cluster", "epoch"}, bound to
the leader's lease), `members/NODE` (each node's position, bound to its own lease),
`config` ({"ttl"}, written once: every node must agree), and `head` ({"epoch", "seq",
"url"}: the leader's newest position, published with its renewals and kept after it
dies, so candidates measure their lag against it). All calls go through etcd3gw's
HTTP gateway client with a request timeout and try each endpoint in turn; the watch
threads of etcd3gw are never used (a lost lease is judged by our own clock).
"""

from __future__ import annotations

import concurrent.futures
import functools
import json
import logging
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import etcd3gw

from ..config import DEFAULT_TTL
from ..errors import ConfigError, PeerUnavailable

log = logging.getLogger("sqlrepl.etcd")
#: Pause between two attempts of a failed renewal.
#: Between two attempts to renew the lease (each may leave a request to a frozen member
#: hanging in the pool until its own timeout).
RENEW_PAUSE = 0.2


@dataclass
class Settings:
    endpoints: list[tuple[str, int]]
    name: str
    ttl: int = DEFAULT_TTL

    @property
    def loop_wait(self) -> float:
        """How often the HA loop runs (and the lease is renewed)."""
        return self.ttl / 5

    def key(self, *parts: str) -> str:
        """The etcd key of `parts` under this cluster's prefix."""
        return "/".join(["", "sqlrepl", self.name, *parts])

    @property
    def request_timeout(self) -> float:
        return min(2.0, self.ttl / 5)

    @property
    def step_down_after(self) -> float:
        """A leader closes its gate this long after the send time of its last good renewal:
        before the lease (which etcd counts from a later instant) can expire."""
        return self.ttl - 2 * self.request_timeout


def parse(url: str, ttl: int = DEFAULT_TTL) -> Settings:
    """etcd://HOST:PORT[,HOST:PORT]/NAME -> Settings, checked for consistency."""
    parsed = urlparse(url)
    name = parsed.path.strip("/")
    if parsed.scheme != "etcd" or not parsed.netloc or not name or "/" in name:
        raise ConfigError(f"{url!r} is not etcd://HOST:PORT[,HOST:PORT]/CLUSTER")
    endpoints = []
    for part in parsed.netloc.split(","):
        host, _, port = part.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"{part!r} in {url!r} is not HOST:PORT")
        endpoints.append((host.strip("[]"), int(port)))
    settings = Settings(endpoints, name, ttl)
    if ttl < 3:
        raise ConfigError(f"--ttl {ttl} is too short: at least 3 seconds")
    if settings.loop_wait + 2 * settings.request_timeout >= ttl:
        raise ConfigError(f"--ttl {ttl}: renewals and their timeouts do not fit in it")
    return settings


class Endpoints:
    """etcd's HTTP gateway at every endpoint, each with a request timeout. Blocking."""

    def __init__(self, settings: Settings) -> None:
        timeout = settings.request_timeout
        self.clients = [
            etcd3gw.client(host=h, port=p, timeout=timeout) for h, p in settings.endpoints
        ]
        self._pool = concurrent.futures.ThreadPoolExecutor(16, "etcd")

    def call(self, fn: Any) -> Any:
        """`fn(client)` at one endpoint after another until one answers."""
        errors = []
        clients = list(self.clients)
        for client in clients:
            try:
                result = fn(client)
            except Exception as exc:  # etcd3gw raises requests' and its own errors
                errors.append(f"{client.host}:{client.port}: {exc}")
                continue
            if client is not clients[0]:
                # The endpoint that answered goes first from now on: a dead or partitioned
                # member costs one timeout once, not on every call.
                self.clients[:] = [client, *(c for c in clients if c is not client)]
            return result
        raise PeerUnavailable("etcd unreachable: " + "; ".join(errors))

    def call_any(self, fn: Any, timeout: float | None = None) -> Any:
        """Send `fn` to every endpoint at once; the first answer wins (idempotent calls).
        `timeout`: wait no longer than this for one (a request left behind ends by its
        own timeout, in the pool)."""
        futures = {self._pool.submit(fn, c): c for c in self.clients}
        errors = []
        try:
            for done in concurrent.futures.as_completed(futures, timeout=timeout):
                client = futures[done]
                try:
                    return done.result()
                except Exception as exc:  # etcd3gw raises requests' and its own errors
                    errors.append(f"{client.host}:{client.port}: {exc}")
        except concurrent.futures.TimeoutError:
            errors.append(f"no answer within {timeout:.1f} s")
        raise PeerUnavailable("etcd unreachable: " + "; ".join(errors))


def _refresh(lease_id: int, client: Any) -> int:
    return int(etcd3gw.Lease(lease_id, client).refresh())


@dataclass
class Etcd:
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
            self._etcd.call(lambda c: c.put(key, json.dumps({**info, "epoch": epoch}), lease=lease))
        except Exception:
            self._etcd.call(lambda c: lease.revoke())  # give the half-taken key back
            raise
        self.lease_id, self.last_good_send = lease.id, sent
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
                    functools.partial(_refresh, lease_id), timeout=max(left, RENEW_PAUSE)
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
