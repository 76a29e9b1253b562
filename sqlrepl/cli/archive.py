"""`sqlrepl archive`: keep every batch and periodic snapshots; list and verify them."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from .. import config, render
from .base import (
    Command,
    ListenAddress,
    check_coordinator,
    cli,
    client_tls,
    coordinator_options,
    token_option,
)


class ArchiveGroup(click.Group):
    """`sqlrepl archive DIR --leader URL` runs the archive; `archive verify DIR` and
    `archive list DIR` read one. A first word that names no subcommand means `run`."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


@cli.group(cls=ArchiveGroup)
def archive() -> None:
    """A continuous archive for point-in-time restore: `sqlrepl archive DIR --leader URL`.

    It follows the leader like a read replica (its own copy is DIR/replica.db), keeps
    every batch it applies in checksummed segment files and a snapshot every
    --snapshot-interval, and removes what retention no longer needs. `sqlrepl restore
    DIR DEST --at TIME|TOKEN` rebuilds the database as the leader had it then.
    """


@archive.command("run", cls=Command)
@click.argument("directory", metavar="DIR", type=click.Path(file_okay=False, path_type=Path))
@click.option("--leader", "leader_url", required=True, help="URL of the leader, http://HOST:PORT.")
@click.option(
    "--listen",
    type=ListenAddress(),
    default="127.0.0.1:7302",
    show_default=True,
    help="Address to serve status on.",
)
@token_option
@click.option(
    "--snapshot-interval",
    type=click.FloatRange(min=1),
    default=3600.0,
    show_default=True,
    help="Seconds between snapshots (a restore replays at most this much).",
)
@click.option(
    "--segment-interval",
    type=click.FloatRange(min=0.1),
    default=600.0,
    show_default=True,
    help="Seconds after which a segment file is sealed with its checksum.",
)
@click.option(
    "--keep",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Snapshots kept whatever their age.",
)
@click.option(
    "--keep-days",
    type=click.FloatRange(min=0),
    default=7.0,
    show_default=True,
    help="Snapshots younger than this are kept too; older batches than the oldest "
    "snapshot kept are removed.",
)
@coordinator_options
def run(
    directory: Path,
    leader_url: str,
    listen: tuple[str, int],
    token_file: Path | None,
    snapshot_interval: float,
    segment_interval: float,
    keep: int,
    keep_days: float,
    coordinator: str | None,
    ttl: int,
) -> None:
    """Archive the leader at URL into DIR until stopped."""
    from ..node.configs import ArchiveConfig, FollowerConfig
    from ..node.daemon import run_follower

    check_coordinator(coordinator, ttl)
    directory.mkdir(parents=True, exist_ok=True)
    settings = ArchiveConfig(directory, snapshot_interval, keep, keep_days, segment_interval)
    run_follower(
        FollowerConfig(
            directory / "replica.db",
            *listen,
            config.load_token(token_file),
            leader=leader_url,
            client_tls=client_tls(),
            candidate=False,
            coordinator=coordinator,
            ttl=ttl,
            archive=settings,
        )
    )


@archive.command("verify", cls=Command)
@click.argument("directory", metavar="DIR", type=click.Path(file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def verify(directory: Path, as_json: bool) -> None:
    """Check every snapshot and segment of the archive in DIR; exit 1 if any is damaged."""
    from ..pitr import verify as check

    result = check(directory)
    if as_json:
        render.print_json(result)
    else:
        _print_verify(result)
    if not result["ok"]:
        sys.exit(1)


def _print_verify(result: dict[str, Any]) -> None:
    for problem in result["problems"]:
        render.error(problem)
    state = "[green]ok[/]" if result["ok"] else "[red]damaged[/]"
    render.console.print(
        f"archive {state}: {result['chains']} chain(s), {result['snapshots']} snapshot(s), "
        f"{result['batches']} batch(es)"
    )


@archive.command("list", cls=Command)
@click.argument("directory", metavar="DIR", type=click.Path(file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the restore points as JSON.")
def list_points(directory: Path, as_json: bool) -> None:
    """The restore points of the archive in DIR: a token and a time for each."""
    from ..pitr import points

    found = points(directory)
    if as_json:
        render.print_json(found)
        return
    for p in found:
        render.console.print(f"{render.iso(p['at'])}  {p['token']:>16}  {p['kind']}")
