"""Every setting's default, and options from flags, files and the environment.

Only this module reads the environment and token files; every default is a named constant
here and is imported wherever it is used (the CLI shows them, the daemons apply them).
"""

from __future__ import annotations

import contextvars
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import urlparse

from .errors import ConfigError

TOKEN_ENV = "SQLREPL_TOKEN"
DEFAULT_LEADER_LISTEN = "127.0.0.1:7300"
DEFAULT_FOLLOWER_LISTEN = "127.0.0.1:7301"
#: etcd: seconds the leader lease lasts.
DEFAULT_TTL = 10
#: Most changes a candidate may lag behind what it knows of its leader and still be promoted
#: (automatically, or without --force). 0 would leave a cluster leaderless whenever the
#: leader dies while every follower is a few changes behind (Patroni: maximum_lag_on_failover).
DEFAULT_MAX_LAG = 1000
#: Leader: `--trim-interval`, accepted and ignored (the log bounds itself as apps write).
DEFAULT_TRIM_INTERVAL = 10.0
#: Leader: changes the log keeps (bounded in the capture path); a follower further
#: behind re-bootstraps from a snapshot.
DEFAULT_LOG_LIMIT = 1_000_000
#: Longest frame of a batch on the wire, in bytes (`--frame-size`); the bounds it may take.
DEFAULT_FRAME_SIZE = 4 << 20
MIN_FRAME_SIZE, MAX_FRAME_SIZE = 4 << 10, 64 << 20
#: Leader: seconds a silent follower is remembered; after that it re-bootstraps.
DEFAULT_RETENTION = 24 * 3600.0
#: Leader: longest a switchover waits for its target to apply everything.
DEFAULT_SWITCHOVER_TIMEOUT = 10.0
#: A switchover target further behind than this many changes is refused (without --force).
SWITCHOVER_MAX_LAG = 10_000
#: Longest a follower may hold a batch request open at the leader waiting for changes.
MAX_POLL_WAIT = 60.0
#: How long one batch request of a follower waits at the leader for new changes: also the
#: keep-alive of an idle follower (its last contact and freshness are never older than this).
DEFAULT_POLL_WAIT = 3
#: A follower takes its link for dead when a long poll stays silent this much longer than
#: the poll's wait (the leader answers every poll within it, data or not): a connection
#: cut without a reset is noticed within wait + grace seconds.
STALL_GRACE = 2.0
#: Leader: with --min-sync-replicas, how far behind the head (seconds) a follower may be
#: and still count (Redis' min-replicas-max-lag).
DEFAULT_MAX_REPLICA_LAG = 10.0
#: `status --check`: a follower further behind than this many seconds is unhealthy.
DEFAULT_CHECK_LAG_SECONDS = 30.0
#: Follower: retry delays after a failed pull (doubling from the first to the second).
BACKOFF_MIN, BACKOFF_MAX = 0.1, 5.0
#: Leader: a fallback look for changes, for file systems that send no events.
RECHECK_INTERVAL = 5.0
#: The leader looks at the file at most this often under a stream of commits (one batch
#: for a burst; adds at most this much to replication lag, and nothing after a quiet spell).
LOOK_INTERVAL_S = 0.004
#: After a look woken by a write, the leader looks again after these pauses: a commit is
#: visible only once published in the WAL index, a moment after the write that woke it.
FOLLOW_UP_LOOKS_S = (0.001, 0.005, 0.025, 0.1)
#: How long one attempt to close the write gate polls for an app's write lock (then it
#: logs and tries again, for as long as it takes).
GATE_CLOSE_PATIENCE = 1.0
#: How often a leader checks that its database's disk takes a new, synced block.
DISK_CHECK_INTERVAL = 2.0
#: How long the daemons' SQLite connections wait for an app's lock before SQLITE_BUSY.
BUSY_TIMEOUT_MS = 10_000
#: Seconds to wait for a TCP connection to a peer.
CONNECT_TIMEOUT = 5.0
#: Coordination when no --coordinator is given.
STATIC = "static"


#: What every log line says of the role writing it (node, role, epoch), for JSON logs: set
#: by each role when it starts, for its tasks (and its database thread) to inherit.
LOG_CONTEXT: contextvars.ContextVar[dict[str, object]] = contextvars.ContextVar("log_context")


def log_context() -> dict[str, object]:
    """The context of the role running here (nulls until a role started)."""
    return LOG_CONTEXT.get({"node": None, "role": None, "epoch": None})


TLS_CA_ENV = "SQLREPL_TLS_CA"


@dataclass(frozen=True)
class ClientTLS:
    """How this process checks the nodes it connects to over https, passed down to every
    client: `ca` (a CA bundle; default: $SQLREPL_TLS_CA, else the system's), and a client
    certificate `cert`/`key` for nodes that require one (mutual TLS)."""

    ca: str | None = None
    cert: str | None = None
    key: str | None = None

    def context(self) -> ssl.SSLContext:
        """The context for https connections: certificates are always verified."""
        ca = self.ca or os.environ.get(TLS_CA_ENV) or None
        try:
            context = ssl.create_default_context(cafile=ca)
            if self.cert:
                context.load_cert_chain(str(self.cert), self.key or None)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load TLS files ({ca or 'system CAs'}): {exc}") from exc
        return context


def server_ssl(
    cert: Path | None, key: Path | None, client_ca: Path | None
) -> ssl.SSLContext | None:
    """The context a node serves https with (None: plain http). With `client_ca`, only
    clients presenting a certificate signed by it are served (mutual TLS)."""
    if cert is None:
        if key is not None or client_ca is not None:
            raise ConfigError("--tls-key and --tls-client-ca need --tls-cert")
        return None
    try:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(cert), str(key) if key else None)
        if client_ca is not None:
            context.load_verify_locations(cafile=str(client_ca))
            context.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load the TLS certificate {cert}: {exc}") from exc
    return context


def parse_listen(value: str) -> tuple[str, int]:
    """'HOST:PORT' or '[v6]:PORT' -> (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{value!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


WILDCARDS = ("0.0.0.0", "::", "")


def advertised_url(host: str, port: int, advertise: str | None, tls: bool = False) -> str:
    """The URL other nodes and tools reach this node at: --advertise, or the listen address.

    A wildcard listen address (0.0.0.0, ::) is never published: it needs --advertise.
    """
    if advertise is not None:
        parsed = urlparse(advertise)
        if parsed.scheme not in ("http", "https") or not parsed.hostname or parsed.port is None:
            raise ConfigError(f"--advertise {advertise!r} is not http://HOST:PORT")
        if parsed.hostname in WILDCARDS or parsed.path not in ("", "/"):
            raise ConfigError(f"--advertise {advertise!r} is not an address others can reach")
        return advertise.rstrip("/")
    if host in WILDCARDS:
        raise ConfigError(
            f"listening on {host or '*'}:{port} needs --advertise URL "
            "(the address other nodes reach this one at)"
        )
    scheme = "https" if tls else "http"
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


class Listening(Protocol):
    """What both roles' settings say about where a node listens."""

    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def advertise(self) -> str | None: ...
    @property
    def tls_cert(self) -> Path | None: ...


def own_url(settings: Listening) -> str:
    """A node's advertised URL (https when it serves TLS): the one home of that question."""
    tls = settings.tls_cert is not None
    return advertised_url(settings.host, settings.port, settings.advertise, tls)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_token(token_file: Path | None) -> str | None:
    """The shared token: from --token-file, else $SQLREPL_TOKEN, else none."""
    if token_file is not None:
        try:
            token = token_file.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read token file {token_file}: {exc.strerror}") from exc
        if not token:
            raise ConfigError(f"token file {token_file} is empty")
        return token
    return os.environ.get(TOKEN_ENV) or None


def check_exposure(host: str, token: str | None) -> None:
    """Listening beyond loopback requires a token."""
    if token is None and not is_loopback(host):
        raise ConfigError(
            f"refusing to listen on {host} without a token: set --token-file or ${TOKEN_ENV} "
            "(only loopback addresses may run without one)"
        )
