"""Commands about files: snapshot, demo."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .. import config, render
from .base import (
    Command,
    cli,
    token_option,
)


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
    from ..backup import save

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
    from ..demo import run_demo

    if not run_demo(duration, sample):
        sys.exit(1)
