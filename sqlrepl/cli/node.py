"""`sqlrepl node --config FILE`: one command per node, its role from the cluster's state;
`sqlrepl config check FILE`: validate a file and show the effective settings."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from .. import config, logs, render, settings
from ..core.cluster import MEANING
from ..errors import ConfigError
from .base import Command, NodeURL, cli, client_tls, token_option

#: The flags of `node`: one per settings key (values parsed like the file's).
FLAG_HELP = {
    "db": "The database file.",
    "listen": "Address to serve on, HOST:PORT.",
    "advertise": "URL other nodes reach this one at.",
    "members": "Other members' URLs, comma-separated (used to find the leader).",
    "coordinator": "etcd://HOST:PORT[,HOST:PORT]/CLUSTER for automatic failover.",
    "ttl": "etcd: seconds the leader lease lasts.",
    "max_lag": "Most changes a candidate may lag and still be promoted.",
    "token_file": "File holding the shared token.",
    "log_limit": "Changes the leader's log keeps.",
    "retention": "Seconds a silent follower stays listed in status.",
    "trim_interval": "Accepted and ignored (the log bounds itself).",
    "min_sync_replicas": "Refuse writes while fewer followers are connected and fresh.",
    "max_replica_lag": "Seconds behind a follower may be and count for --min-sync-replicas.",
    "frame_size": "Longest frame of a batch, in bytes (larger ones go in more frames).",
    "log_format": "text or json.",
    "tls_cert": "Serve https with this certificate.",
    "tls_key": "The certificate's key.",
    "tls_client_ca": "Serve only clients with a certificate this CA signed.",
    "tls_ca": "CA bundle the other nodes' certificates are checked against.",
}


def node_flags(fn: Any) -> Any:
    for key, text in reversed(FLAG_HELP.items()):
        fn = click.option("--" + key.replace("_", "-"), key, default=None, help=text)(fn)
    return click.option(
        "--candidate/--no-candidate", default=None, help="May this node be promoted?"
    )(fn)


@cli.command(cls=Command)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="TOML file with the node's settings (SQLREPL_* variables and flags override it).",
)
@node_flags
def node(config_file: Path | None, **flags: Any) -> None:
    """Run this host's node: leader or follower, as the cluster's state says.

    A leader file leads (or follows a newer leader it finds); a follower file follows;
    a missing file is bootstrapped from whichever member leads. The same command stays
    right after promote, switchover and failover: one service unit per host.
    """
    try:
        s = settings.load(config_file, flags=flags)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    root = click.get_current_context().find_root().params
    if s.sources.get("log_format") or root.get("log_format") == "text":
        logs.setup(bool(root.get("verbose")), s.log_format)
    from ..node.daemon import run_node

    leader, follower = node_configs(s)
    run_node(leader, follower, s.members)


def node_configs(s: settings.NodeSettings) -> tuple[Any, Any]:
    from ..node.configs import FollowerConfig, LeaderConfig, NodeConfig

    token = config.load_token(Path(s.token_file) if s.token_file else None)
    host, port = config.parse_listen(s.listen)
    db = Path(s.db)
    base = NodeConfig(
        db,
        host,
        port,
        token,
        coordinator=s.coordinator,
        ttl=s.ttl,
        advertise=s.advertise,
        tls_cert=Path(s.tls_cert) if s.tls_cert else None,
        tls_key=Path(s.tls_key) if s.tls_key else None,
        tls_client_ca=Path(s.tls_client_ca) if s.tls_client_ca else None,
        client_tls=client_tls(s.tls_ca),
    )
    leader = LeaderConfig(
        retention=s.retention,
        log_limit=s.log_limit,
        min_sync_replicas=s.min_sync_replicas,
        max_replica_lag=s.max_replica_lag,
        frame_size=s.frame_size,
        **base.shared(),
    )
    follower = FollowerConfig(leader="", candidate=s.candidate, max_lag=s.max_lag, **base.shared())
    return leader, follower


@cli.group("config")
def config_() -> None:
    """Node configuration files."""


@config_.command("check", cls=Command)
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the effective settings as JSON.")
def check(file: Path, as_json: bool) -> None:
    """Validate FILE and print the effective settings (with SQLREPL_* variables applied),
    each with where its value came from. Exit 1, naming the key, if anything is wrong."""
    s = settings.load(file, env=os.environ)
    effective = s.effective()
    if as_json:
        render.print_json(effective)
    else:
        render.settings_table(effective, file)


class SettingPair(click.ParamType):
    name = "KEY=VALUE"

    def convert(self, value: Any, param: Any, ctx: Any) -> tuple[str, str]:
        key, sep, text = str(value).partition("=")
        if not sep or not key:
            self.fail(f"{value!r} is not KEY=VALUE", param, ctx)
        return key.strip(), text.strip()


@config_.command("cluster", cls=Command)
@click.argument("url", type=NodeURL())
@click.option(
    "--set",
    "pairs",
    type=SettingPair(),
    multiple=True,
    help="Change a cluster setting: " + "; ".join(f"{k}: {v}" for k, v in MEANING.items()),
)
@click.option("--json", "as_json", is_flag=True, help="Print the settings as JSON.")
@token_option
def cluster(
    url: str, pairs: tuple[tuple[str, str], ...], as_json: bool, token_file: Path | None
) -> None:
    """Show the cluster's own settings, or change them at run time with --set (like
    `patronictl edit-config`). URL is any node; its leader answers. They bind whichever
    node leads; a node's own flags or TOML only seed a new cluster."""
    from ..admin import cluster_settings

    found = cluster_settings(url, dict(pairs), config.load_token(token_file), client_tls())
    if as_json:
        render.print_json(found)
    else:
        for key, value in found.items():
            click.echo(f"{key} = {value:g}    # {MEANING.get(key, '')}")
