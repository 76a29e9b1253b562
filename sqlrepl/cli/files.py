"""Commands about files: snapshot, restore, demo."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from .. import config, render
from .base import Command, cli, client_tls, token_option


@cli.command(cls=Command)
@click.argument("source")
@click.argument("dest", type=click.Path(path_type=Path))
@click.option(
    "--keep",
    type=click.IntRange(min=1),
    help="When DEST is a directory, keep the newest N snapshots of SOURCE's cluster there.",
)
@click.option(
    "--keep-days",
    type=click.FloatRange(min=0, min_open=True),
    help="When DEST is a directory, keep its snapshots of SOURCE younger than DAYS "
    "(with --keep: a snapshot either rule keeps stays; the newest always stays).",
)
@click.option(
    "--max-lag",
    type=click.FloatRange(min=0),
    help="Refuse (exit 1) if SOURCE is a follower more than SECONDS behind its leader.",
)
@click.option("--json", "as_json", is_flag=True, help="Print what was written as JSON.")
@token_option
def snapshot(
    source: str,
    dest: Path,
    keep: int | None,
    keep_days: float | None,
    max_lag: float | None,
    as_json: bool,
    token_file: Path | None,
) -> None:
    """Write a consistent, verified snapshot of SOURCE to DEST.

    SOURCE is a sqlrepl database file or a node URL. DEST is a file (replaced atomically)
    or a directory (a timestamped file is added). On failure, or killed by SIGTERM,
    nothing is left behind and the exit code is 1. Built for cron.
    """
    from ..backup import save

    with render.transfer_progress("snapshot") as progress:
        result = save(
            source,
            dest,
            token=config.load_token(token_file),
            tls=client_tls(),
            keep=keep,
            keep_days=keep_days,
            max_lag=max_lag,
            progress=progress,
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
    from ..demo import run_demo

    if not run_demo(duration, sample):
        sys.exit(1)


@cli.command(cls=Command)
@click.argument(
    "snapshot_path",
    metavar="SNAPSHOT",
    type=click.Path(exists=True, path_type=Path),
)
@click.argument("dest", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--at",
    metavar="TIME|TOKEN",
    help="With an archive (SNAPSHOT is its DIR): the state at this token (E:S) or time "
    "(ISO 8601 such as 2026-11-28T12:00:00Z, or @UNIX). Default: the newest.",
)
@click.option(
    "--as-leader",
    is_flag=True,
    help="Keep the cluster: DEST leads a new epoch from the snapshot's position "
    "(followers that went further see the fork). Default: a plain file, a new cluster.",
)
@click.option(
    "--epoch",
    type=click.IntRange(min=1),
    help="With --as-leader: the new epoch at least (default: the snapshot's + 1).",
)
@click.option("--json", "as_json", is_flag=True, help="Print what was written as JSON.")
def restore(
    snapshot_path: Path,
    dest: Path,
    at: str | None,
    as_leader: bool,
    epoch: int | None,
    as_json: bool,
) -> None:
    """Make the writable database DEST from SNAPSHOT (a snapshot, a follower's copy, or
    an archive's DIR with --at).

    DEST must not exist; it appears whole or not at all. Then start `sqlrepl leader DEST`.
    """
    from ..backup import restore as restore_file
    from ..pitr import restore as restore_archive

    if epoch is not None and not as_leader:
        raise click.UsageError("--epoch goes with --as-leader")
    if snapshot_path.is_dir():
        result = restore_archive(snapshot_path, dest, at, as_leader=as_leader, epoch=epoch)
        if as_json:
            render.print_json(result)
        else:
            render.console.print(
                f"restored [bold]{result['path']}[/] ({result['as']}) at {result['at']}: "
                f"snapshot {result['snapshot']} and {result['batches_replayed']} batch(es)"
            )
        return
    if at is not None:
        raise click.UsageError("--at goes with an archive directory as SNAPSHOT")
    result = restore_file(snapshot_path, dest, as_leader=as_leader, epoch=epoch)
    if as_json:
        render.print_json(result)
    else:
        source = result["source"]
        render.console.print(
            f"restored [bold]{result['path']}[/] ({result['as']}) from a copy of cluster "
            f"{source['cluster']} at {source['epoch']}/{source['seq']}"
            + (f", taken {render.iso(source['at'])}" if source.get("at") else "")
            + _of(source)
        )


def _of(source: dict[str, Any]) -> str:
    """What a snapshot was taken of: ' of the leader http://…' (or its file, or node)."""
    where = source.get("source") or source.get("node")
    return f" of the {source.get('of') or 'node'} {where}" if where else ""
