"""Commands about the cluster: status, promote, switchover, history, wait."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from .. import config, render
from ..errors import ConfigError
from .base import Command, NodeURL, cli, client_tls, token_option


@cli.command(cls=Command)
@click.argument("urls", nargs=-1, required=True, type=NodeURL())
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array, one object per URL.")
@click.option(
    "--check",
    is_flag=True,
    help="Exit 1 also when a node is stuck, failing or lagging (for cron and monitoring).",
)
@click.option(
    "--max-lag-seconds",
    type=click.FloatRange(min=0),
    default=config.DEFAULT_CHECK_LAG_SECONDS,
    show_default=True,
    help="With --check: a follower further behind than this is unhealthy.",
)
@click.option(
    "-W",
    "--watch",
    is_flag=True,
    help="Refresh the table every --interval seconds until Ctrl-C (like patronictl list -W).",
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=2.0,
    show_default=True,
    help="With --watch: seconds between refreshes.",
)
@token_option
def status(
    urls: tuple[str, ...],
    as_json: bool,
    check: bool,
    max_lag_seconds: float,
    watch: bool,
    interval: float,
    token_file: Path | None,
) -> None:
    """Show role, epoch, position and lag of every node at URLS.

    Exits 1 when a node is unreachable; with --check, also when a follower is not
    streaming, reports an error or lags more than --max-lag-seconds (each said on stderr).
    """
    from ..admin import cluster_status, unhealthy

    token = config.load_token(token_file)
    if watch:
        if as_json or check:
            raise click.UsageError("--watch shows a live table: not with --json or --check")
        tls = client_tls()
        render.watch_status(lambda: cluster_status(list(urls), token, tls), interval)
        return
    nodes = cluster_status(list(urls), token, client_tls())
    if as_json:
        render.print_json(nodes)
    else:
        render.print_status(nodes)
    problems = unhealthy(nodes, max_lag_seconds) if check else []
    for problem in problems:
        render.error(problem)
    if problems or not all(n["ok"] for n in nodes):
        sys.exit(1)


@cli.command(cls=Command)
@click.argument("url", type=NodeURL())
@click.option("--force", is_flag=True, help="Promote even a lagging or non-candidate node.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@token_option
def promote(url: str, force: bool, as_json: bool, token_file: Path | None) -> None:
    """Make the follower at URL the leader of a new epoch.

    Refused (exit 1, with the reason) if URL is unknown, not a candidate or behind its
    leader, unless --force. The old leader, if it still answers, is told to close its
    write gate and rejoin as a follower; point other followers at URL.
    """
    from ..admin import promote as promote_node

    result = promote_node(url, force, config.load_token(token_file), client_tls())
    render.print_json(result) if as_json else render.promoted(result)


@cli.command(cls=Command)
@click.option(
    "--to", "target", required=True, type=NodeURL(), help="URL of the follower to hand over to."
)
@click.option("--force", is_flag=True, help="Hand over even to a lagging or non-candidate node.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@token_option
def switchover(target: str, force: bool, as_json: bool, token_file: Path | None) -> None:
    """Planned handover to the follower at --to, losing nothing.

    The leader closes its write gate, waits (bounded) until the target applied every
    change, promotes it, and rejoins as its follower without a snapshot.
    """
    from ..admin import switchover as switch

    result = switch(target, force, config.load_token(token_file), client_tls())
    render.print_json(result) if as_json else render.switched(result)


@cli.command(cls=Command)
@click.argument("url", type=NodeURL())
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of epochs.")
@token_option
def history(url: str, as_json: bool, token_file: Path | None) -> None:
    """Show the epochs of the cluster as the node at URL knows them."""
    from ..admin import epochs

    rows = epochs(url, config.load_token(token_file), client_tls())
    render.print_json(rows) if as_json else render.history_table(rows)


class TokenParam(click.ParamType):
    name = "TOKEN"

    def convert(self, value: Any, param: Any, ctx: Any) -> str:
        from ..core import tokens

        try:
            return tokens.format_token(tokens.parse(str(value)))
        except ConfigError as exc:
            self.fail(str(exc), param, ctx)


class AcksParam(click.ParamType):
    name = "K"

    def convert(self, value: Any, param: Any, ctx: Any) -> str:
        if str(value) == "majority" or str(value).isdigit():
            return str(value)
        self.fail(f"{value!r} is not a number of followers or 'majority'", param, ctx)


@cli.command(cls=Command)
@click.argument("url", type=NodeURL())
@click.argument("token", type=TokenParam())
@click.option(
    "--acks",
    type=AcksParam(),
    help="Followers that must hold TOKEN: a number or 'majority' (URL is the leader; "
    "default 1). Without it, a follower's URL waits until that follower holds TOKEN.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, max=300),
    default=10.0,
    show_default=True,
    help="Seconds to wait before failing.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@token_option
def wait(
    url: str,
    token: str,
    acks: str | None,
    timeout: float,
    as_json: bool,
    token_file: Path | None,
) -> None:
    """Wait until TOKEN (EPOCH:SEQ, from `SELECT token FROM _sqlrepl_position`) is held.

    Exits 0 once enough followers acknowledged it (the leader counts) or once the
    follower at URL holds it; exits 1 on a timeout, naming how many acknowledged, and at
    once for a token past a fork that no node will ever hold.
    """
    from ..api import wait as wait_for

    auth = config.load_token(token_file)
    held = wait_for(token, url, acks=acks, timeout=timeout, auth=auth, tls=client_tls())
    result = {"token": token, "acks": held, "url": url}
    if as_json:
        render.print_json(result)
    elif acks is None and held == 0:
        click.echo(f"{url} holds {token}")
    else:
        click.echo(f"{token} acknowledged by {held} follower{'s' if held != 1 else ''}")
