"""sqlrepl: replicate a plain SQLite file to read replicas, with snapshots and failover.

The public Python API (see the README):

    Position           where a node stands: (epoch, seq)
    SqlreplError …     the exception tree (sqlrepl.errors)
    __version__

Everything else is internal; its layers are core/ (pure: apsw and plain values),
coord/ (coordination backends), node/ (the asyncio daemons), and the CLI on top.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from .core.positions import Position
from .errors import (
    ApplyError,
    AuthError,
    ConfigError,
    DatabaseError,
    PeerUnavailable,
    ProtocolError,
    Refused,
    SnapshotNeeded,
    SqlreplError,
    StaleEpochError,
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
    "PeerUnavailable",
    "Position",
    "ProtocolError",
    "Refused",
    "SnapshotNeeded",
    "SqlreplError",
    "StaleEpochError",
    "__version__",
]
