"""etcd's HTTP gateway, reached through every endpoint of a cluster URL, with the
settings the coordinator derives from the URL and the TTL (`coord.etcd`)."""

from __future__ import annotations

import concurrent.futures
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import etcd3gw

from ..config import DEFAULT_TTL
from ..errors import ConfigError, PeerUnavailable

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
                errors.append(_failed(client, exc))
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
                    errors.append(_failed(client, exc))
        except concurrent.futures.TimeoutError:
            errors.append(f"no answer within {timeout:.1f} s")
        raise PeerUnavailable("etcd unreachable: " + "; ".join(errors))


def refresh(lease_id: int, client: Any) -> int:
    return int(etcd3gw.Lease(lease_id, client).refresh())


def _failed(client: Any, exc: Exception) -> str:
    """One endpoint's failure, for the error that names them all (an error with no text,
    such as requests' bare timeouts, by its type)."""
    return f"{client.host}:{client.port}: {str(exc) or type(exc).__name__}"
