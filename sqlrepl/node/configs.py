"""A node's own settings, one frozen value per role, built once from flags, TOML and the
environment (`cli`, `settings`); defaults come from `config`."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .. import config


@dataclass(frozen=True)
class ArchiveConfig:
    directory: Path
    #: Seconds between snapshots (a restore replays at most this much).
    snapshot_interval: float = 3600.0
    keep: int = 2
    keep_days: float = 7.0
    #: Seconds after which a segment is sealed (checksummed whole) and a new one begun.
    segment_interval: float = 600.0


@dataclass(frozen=True)
class NodeConfig:
    """What every node has, whatever its role: its file, where it listens and how it is
    reached, its coordinator, its TLS."""

    db: Path
    host: str
    port: int
    token: str | None = None
    #: Coordinator URL (None: static) and the lease TTL.
    coordinator: str | None = None
    ttl: int = config.DEFAULT_TTL
    #: The URL others reach this node at (default: from the listen address).
    advertise: str | None = None
    #: Serve https with this certificate and key; with `tls_client_ca`, only to clients
    #: whose certificate it signed (mutual TLS).
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    #: How this node checks the nodes it connects to over https.
    client_tls: config.ClientTLS = config.ClientTLS()

    def shared(self) -> dict[str, Any]:
        """This node's settings of every role, as keywords for another role's config."""
        return {f.name: getattr(self, f.name) for f in fields(NodeConfig)}


@dataclass(frozen=True, kw_only=True)
class LeaderConfig(NodeConfig):
    #: Seconds a silent follower stays in the registry (and status).
    retention: float = config.DEFAULT_RETENTION
    #: Changes the log keeps (bounded in the capture path).
    log_limit: int = config.DEFAULT_LOG_LIMIT
    #: Longest a switchover waits for its target to apply everything.
    switchover_timeout: float = config.DEFAULT_SWITCHOVER_TIMEOUT
    #: The cluster settings this leader starts with when none are recorded (`ClusterSettings`):
    #: writes are refused while fewer followers than this are connected and fresh ...
    min_sync_replicas: int = 0
    #: ... within this many seconds of the head.
    max_replica_lag: float = config.DEFAULT_MAX_REPLICA_LAG
    #: Longest frame of a batch, in bytes: larger transactions and values go in more frames.
    frame_size: int = config.DEFAULT_FRAME_SIZE


@dataclass(frozen=True, kw_only=True)
class FollowerConfig(NodeConfig):
    #: The leader this follower starts pulling from ("": found in the coordinator).
    leader: str
    wait: int = config.DEFAULT_POLL_WAIT
    #: May this node be promoted (by `promote`, `switchover` or the coordinator)?
    candidate: bool = True
    #: Most changes a candidate may lag its leader by and still be promoted.
    max_lag: int = config.DEFAULT_MAX_LAG
    #: Also keep every batch and periodic snapshots there (`sqlrepl archive`).
    archive: ArchiveConfig | None = None
