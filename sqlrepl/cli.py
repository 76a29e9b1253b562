"""The `sqlrepl` command line: each command loads options, makes one library call, renders."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from . import config, logs, render
from .errors import SqlreplError

TOKEN_HELP = f"File holding the shared token (default: ${config.TOKEN_ENV})."


class ListenAddress(click.ParamType):
    name = "HOST:PORT"

    def convert(self, value: Any, param: Any, ctx: Any) -> tuple[str, int]:
        if isinstance(value, tuple):
            return value
        try:
            return config.parse_listen(value)
        except SqlreplError as exc:
            self.fail(str(exc), param, ctx)


class Command(click.Command):
    """Turn SqlreplError into a one-line message and exit 1 (tracebacks only with --verbose)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SqlreplError as exc:
            if ctx.find_root().params.get("verbose"):
                raise
            render.error(str(exc))
            sys.exit(1)


token_option = click.option(
    "--token-file", type=click.Path(dir_okay=False, path_type=Path), help=TOKEN_HELP
)


def coordinator_options(fn: Any) -> Any:
    fn = click.option(
        "--ttl",
        type=int,
        default=config.DEFAULT_TTL,
        show_default=True,
        help="etcd: seconds the leader lease lasts; failover takes about this long.",
    )(fn)
    return click.option(
        "--coordinator",
        metavar="etcd://HOST:PORT[,HOST:PORT]/CLUSTER",
        help="Automatic failover through etcd (default: static, promote by hand).",
    )(fn)


def check_coordinator(url: str | None, ttl: int) -> None:
    """Refuse a bad coordinator URL or TTL before anything starts."""
    from .coord import from_url

    from_url(url, ttl)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Debug logs and full tracebacks.")
@click.version_option(package_name="sqlrepl")
def cli(verbose: bool) -> None:
    """Replicate a plain SQLite file to read replicas, with snapshots and failover."""
    logs.setup(verbose)


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
    help="Seconds between log trims (0: never trim).",
)
@click.option(
    "--retention",
    type=click.FloatRange(min=0),
    default=config.DEFAULT_RETENTION,
    show_default=True,
    help="Seconds a silent follower is remembered; after that it re-bootstraps.",
)
@coordinator_options
def leader(
    db: Path,
    listen: tuple[str, int],
    token_file: Path | None,
    trim_interval: float,
    retention: float,
    coordinator: str | None,
    ttl: int,
) -> None:
    """Capture every committed write to DB and serve it to followers.

    Installs capture triggers on every table (idempotently) and switches DB to WAL mode.
    Apps keep writing to DB with any SQLite driver, also while this daemon is down.
    """
    from .node.daemon import run_leader
    from .node.leader import LeaderConfig

    token = config.load_token(token_file)
    check_coordinator(coordinator, ttl)
    run_leader(
        LeaderConfig(db, *listen, token, trim_interval, retention, coordinator=coordinator, ttl=ttl)
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
def follower(
    db: Path,
    leader_url: str,
    listen: tuple[str, int],
    token_file: Path | None,
    candidate: bool,
    max_lag: int,
    coordinator: str | None,
    ttl: int,
) -> None:
    """Keep DB a read-only replica of the leader.

    A missing or empty DB is bootstrapped from a snapshot; an existing DB must be a
    follower of the same cluster. Apps read DB with read-only connections. When
    promoted, the same process goes on as the leader.
    """
    from .node.daemon import run_follower
    from .node.follower import FollowerConfig

    token = config.load_token(token_file)
    check_coordinator(coordinator, ttl)
    run_follower(
        FollowerConfig(
            db,
            leader_url,
            *listen,
            token,
            candidate=candidate,
            max_lag=max_lag,
            coordinator=coordinator,
            ttl=ttl,
        )
    )


@cli.command(cls=Command)
@click.argument("urls", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array, one object per URL.")
@token_option
def status(urls: tuple[str, ...], as_json: bool, token_file: Path | None) -> None:
    """Show role, epoch, position and lag of every node at URLS.

    Exits 1 when a node is unreachable.
    """
    from .admin import cluster_status

    nodes = cluster_status(list(urls), config.load_token(token_file))
    if as_json:
        render.print_json(nodes)
    else:
        render.print_status(nodes)
    if not all(n["ok"] for n in nodes):
        sys.exit(1)


@cli.command(cls=Command)
@click.argument("url")
@click.option("--force", is_flag=True, help="Promote even a lagging or non-candidate node.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@token_option
def promote(url: str, force: bool, as_json: bool, token_file: Path | None) -> None:
    """Make the follower at URL the leader of a new epoch.

    Refused (exit 1, with the reason) if URL is unknown, not a candidate or behind its
    leader, unless --force. The old leader, if it still answers, is told to close its
    write gate and rejoin as a follower; point other followers at URL.
    """
    from .admin import promote as promote_node

    result = promote_node(url, force, config.load_token(token_file))
    render.print_json(result) if as_json else render.promoted(result)


@cli.command(cls=Command)
@click.option("--to", "target", required=True, help="URL of the follower to hand over to.")
@click.option("--force", is_flag=True, help="Hand over even to a lagging or non-candidate node.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@token_option
def switchover(target: str, force: bool, as_json: bool, token_file: Path | None) -> None:
    """Planned handover to the follower at --to, losing nothing.

    The leader closes its write gate, waits (bounded) until the target applied every
    change, promotes it, and rejoins as its follower without a snapshot.
    """
    from .admin import switchover as switch

    result = switch(target, force, config.load_token(token_file))
    render.print_json(result) if as_json else render.switched(result)


@cli.command(cls=Command)
@click.argument("url")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of epochs.")
@token_option
def history(url: str, as_json: bool, token_file: Path | None) -> None:
    """Show the epochs of the cluster as the node at URL knows them."""
    from .admin import epochs

    rows = epochs(url, config.load_token(token_file))
    render.print_json(rows) if as_json else render.history_table(rows)


@cli.command(cls=Command)
@click.argument("source")
@click.argument("dest", type=click.Path(path_type=Path))
@click.option(
    "--keep",
    type=click.IntRange(min=1),
    help="When DEST is a directory, keep only the newest N snapshots of SOURCE there.",
)
@click.option("--json", "as_json", is_flag=True, help="Print what was written as JSON.")
@token_option
def snapshot(
    source: str, dest: Path, keep: int | None, as_json: bool, token_file: Path | None
) -> None:
    """Write a consistent, verified snapshot of SOURCE to DEST.

    SOURCE is a sqlrepl database file or a node URL. DEST is a file (replaced atomically)
    or a directory (a timestamped file is added). On failure nothing is left behind and
    the exit code is 1. Built for cron.
    """
    from .backup import save

    with render.transfer_progress("snapshot") as progress:
        result = save(
            source, dest, token=config.load_token(token_file), keep=keep, progress=progress
        )
    if as_json:
        render.print_json(result)
    else:
        render.snapshot_written(result)


@cli.command(cls=Command)
@click.option(
    "--duration",
    type=click.FloatRange(min=1),
    default=20.0,
    show_default=True,
    help="Seconds the demo writer runs.",
)
@click.option(
    "--sample",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="Database to replicate (default: a sample shop database built on the fly).",
)
def demo(duration: float, sample: Path | None) -> None:
    """Run a leader and two followers on loopback with a live writer, then check them."""
    from .demo import run_demo

    if not run_demo(duration, sample):
        sys.exit(1)


def main() -> None:
    cli()
