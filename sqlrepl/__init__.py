"""sqlrepl: replicate a plain SQLite file to read replicas, with snapshots and failover.

The public Python API (see docs/consistency.md):

    Position           where a node stands: (epoch, seq)
    token(conn)        the position token ("E:S") covering a connection's commits
    wait(token, leader, acks=1, timeout=10)
                       return once `acks` followers hold the token (NotAcknowledged)
    connect(path, leader, acks=1)
                       a sqlite3 connection whose commit() waits for acknowledgements
    connect_follower(path, after=token, max_lag=seconds)
                       a read-only connection to a follower's file, fresh enough
    SqlreplError …     the exception tree (sqlrepl.errors)
    __version__

Everything else is internal; its layers are core/ (pure: apsw and plain values),
coord/ (coordination backends), node/ (the asyncio daemons), and the CLI on top.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from .api import SyncConnection, connect, connect_follower, token, wait
from .core.positions import Position
from .errors import (
    ApplyError,
    AuthError,
    ConfigError,
    DatabaseError,
    NotAcknowledged,
    PeerUnavailable,
    ProtocolError,
    Refused,
    SnapshotNeeded,
    SqlreplError,
    StaleEpochError,
    TokenForked,
    TooStale,
)

try:
    __version__ = version("sqlrepl")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "ApplyError",
    "AuthError",
    "ConfigError",
    "DatabaseError",
    "NotAcknowledged",
    "PeerUnavailable",
    "Position",
    "ProtocolError",
    "Refused",
    "SnapshotNeeded",
    "SqlreplError",
    "StaleEpochError",
    "SyncConnection",
    "TokenForked",
    "TooStale",
    "__version__",
    "connect",
    "connect_follower",
    "token",
    "wait",
]
