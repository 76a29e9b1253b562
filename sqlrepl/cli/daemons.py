"""`sqlrepl leader` and `sqlrepl follower`: the daemons (their flags are pinned)."""

from __future__ import annotations

from pathlib import Path

import click

from .. import config
from .base import (
    Command,
    ListenAddress,
    advertise_option,
    check_coordinator,
    cli,
    client_tls,
    coordinator_options,
    tls_options,
    token_option,
)


@cli.command(cls=Command)
@click.argument("db", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option(
    "--listen",
    type=ListenAddress(),
    default=config.DEFAULT_LEADER_LISTEN,
    show_default=True,
    help="Address to serve followers on.",
)
@token_option
@click.option(
    "--trim-interval",
    type=click.FloatRange(min=0),
    default=config.DEFAULT_TRIM_INTERVAL,
    show_default=True,
    help="Accepted for compatibility and ignored: the daemon no longer trims the log (it "
    "is bounded by --log-limit as apps write).",
)
@click.option(
    "--retention",
    type=click.FloatRange(min=0),
    default=config.DEFAULT_RETENTION,
    show_default=True,
    help="Seconds a silent follower stays listed in status.",
)
@click.option(
    "--log-limit",
    type=click.IntRange(min=1),
    default=config.DEFAULT_LOG_LIMIT,
    show_default=True,
    help="Changes the leader's log keeps; each app write drops the oldest beyond it. A "
    "follower further behind re-bootstraps from a snapshot.",
)
@click.option(
    "--min-sync-replicas",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Refuse writes (close the write gate) while fewer followers than this are "
    "connected and within --max-replica-lag; reopen by itself.",
)
@click.option(
    "--max-replica-lag",
    type=click.FloatRange(min=0),
    default=config.DEFAULT_MAX_REPLICA_LAG,
    show_default=True,
    help="Seconds behind the head a follower may be and still count for --min-sync-replicas.",
)
@click.option(
    "--frame-size",
    type=click.IntRange(min=config.MIN_FRAME_SIZE, max=config.MAX_FRAME_SIZE),
    default=config.DEFAULT_FRAME_SIZE,
    show_default=True,
    help="Longest frame of a batch, in bytes. A larger transaction or value goes in more "
    "frames; any size SQLite accepts replicates.",
)
@coordinator_options
@advertise_option
@tls_options
def leader(
    db: Path,
    listen: tuple[str, int],
    token_file: Path | None,
    trim_interval: float,
    retention: float,
    log_limit: int,
    min_sync_replicas: int,
    max_replica_lag: float,
    frame_size: int,
    coordinator: str | None,
    ttl: int,
    advertise: str | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    tls_client_ca: Path | None,
) -> None:
    """Capture every committed write to DB and serve it to followers.

    Installs capture triggers on every table (idempotently) and switches DB to WAL mode.
    Apps keep writing to DB with any SQLite driver, also while this daemon is down.
    """
    from ..node.configs import LeaderConfig
    from ..node.daemon import run_leader

    token = config.load_token(token_file)
    check_coordinator(coordinator, ttl)
    run_leader(
        LeaderConfig(
            db,
            *listen,
            token,
            retention=retention,
            log_limit=log_limit,
            coordinator=coordinator,
            ttl=ttl,
            advertise=advertise,
            min_sync_replicas=min_sync_replicas,
            max_replica_lag=max_replica_lag,
            frame_size=frame_size,
            tls_cert=tls_cert,
            tls_key=tls_key,
            tls_client_ca=tls_client_ca,
            client_tls=client_tls(),
        )
    )


@cli.command(cls=Command)
@click.argument("db", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--leader", "leader_url", required=True, help="URL of the leader, http://HOST:PORT.")
@click.option(
    "--listen",
    type=ListenAddress(),
    default=config.DEFAULT_FOLLOWER_LISTEN,
    show_default=True,
    help="Address to serve status and snapshots on.",
)
@token_option
@click.option(
    "--candidate/--no-candidate",
    default=True,
    show_default=True,
    help="May this follower be promoted (promote, switchover, automatic failover)?",
)
@click.option(
    "--max-lag",
    type=click.IntRange(min=0),
    default=config.DEFAULT_MAX_LAG,
    show_default=True,
    help="Most changes it may lag its leader by and still be promoted without --force.",
)
@coordinator_options
@advertise_option
@tls_options
def follower(
    db: Path,
    leader_url: str,
    listen: tuple[str, int],
    token_file: Path | None,
    candidate: bool,
    max_lag: int,
    coordinator: str | None,
    ttl: int,
    advertise: str | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    tls_client_ca: Path | None,
) -> None:
    """Keep DB a read-only replica of the leader.

    A missing or empty DB is bootstrapped from a snapshot; an existing DB must be a
    follower of the same cluster. Apps read DB with read-only connections. When
    promoted, the same process goes on as the leader.
    """
    from ..node.configs import FollowerConfig
    from ..node.daemon import run_follower

    token = config.load_token(token_file)
    check_coordinator(coordinator, ttl)
    run_follower(
        FollowerConfig(
            db,
            *listen,
            token,
            leader=leader_url,
            candidate=candidate,
            max_lag=max_lag,
            coordinator=coordinator,
            ttl=ttl,
            advertise=advertise,
            tls_cert=tls_cert,
            tls_key=tls_key,
            tls_client_ca=tls_client_ca,
            client_tls=client_tls(),
        )
    )
