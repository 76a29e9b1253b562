"""The command group and what its commands share: error handling, option types, options."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from .. import config, logs, render
from ..errors import SqlreplError

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


class NodeURL(click.ParamType):
    """A node's URL, http(s)://HOST:PORT (a usage error otherwise: exit 2)."""

    name = "URL"

    def convert(self, value: Any, param: Any, ctx: Any) -> str:
        from urllib.parse import urlsplit

        try:
            parts = urlsplit(str(value))
            port = parts.port
        except ValueError:
            port = None
            parts = urlsplit("")
        if parts.scheme not in ("http", "https") or not parts.hostname or port is None:
            self.fail(f"{value!r} is not a node URL: http://HOST:PORT", param, ctx)
        return str(value).rstrip("/")


class CoordinatorURL(click.ParamType):
    """--coordinator: checked before anything starts (a usage error: exit 2)."""

    name = "URL"

    def convert(self, value: Any, param: Any, ctx: Any) -> str:
        from ..coord import from_url

        try:
            from_url(str(value))
        except SqlreplError as exc:
            self.fail(str(exc), param, ctx)
        return str(value)


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
advertise_option = click.option(
    "--advertise",
    metavar="URL",
    help="URL other nodes reach this one at (default: from --listen; needed with 0.0.0.0).",
)


def tls_options(fn: Any) -> Any:
    """--tls-cert/--tls-key/--tls-client-ca: serve https (and require client certificates)."""
    path = click.Path(dir_okay=False, exists=True, path_type=Path)
    fn = click.option(
        "--tls-client-ca",
        type=path,
        help="Serve only clients whose certificate this CA signed (mutual TLS).",
    )(fn)
    fn = click.option("--tls-key", type=path, help="The certificate's private key.")(fn)
    return click.option("--tls-cert", type=path, help="Serve https with this certificate (PEM).")(
        fn
    )


def coordinator_options(fn: Any) -> Any:
    fn = click.option(
        "--ttl",
        type=click.IntRange(min=1),
        default=config.DEFAULT_TTL,
        show_default=True,
        help="etcd: seconds the leader lease lasts; failover takes about this long.",
    )(fn)
    return click.option(
        "--coordinator",
        type=CoordinatorURL(),
        metavar="etcd://HOST:PORT[,HOST:PORT]/CLUSTER",
        help="Automatic failover through etcd (default: static, promote by hand).",
    )(fn)


def check_coordinator(url: str | None, ttl: int) -> None:
    """Refuse a bad coordinator URL or TTL before anything starts."""
    from ..coord import from_url

    from_url(url, ttl)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Debug logs and full tracebacks.")
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Daemon logs as text lines, or one JSON object per line.",
)
@click.option(
    "--tls-ca",
    type=click.Path(dir_okay=False, exists=True),
    help=f"CA bundle that https nodes' certificates are checked against (default: "
    f"${config.TLS_CA_ENV}, else the system's). Verification is always on.",
)
@click.option(
    "--tls-client-cert",
    type=click.Path(dir_okay=False, exists=True),
    help="Client certificate (and key, in it or --tls-client-key) for nodes that require one.",
)
@click.option("--tls-client-key", type=click.Path(dir_okay=False, exists=True), help="Its key.")
@click.version_option(package_name="sqlrepl")
def cli(
    verbose: bool,
    log_format: str,
    tls_ca: str | None,
    tls_client_cert: str | None,
    tls_client_key: str | None,
) -> None:
    """Replicate a plain SQLite file to read replicas, with snapshots and failover."""
    logs.setup(verbose, log_format)


def client_tls(ca: str | None = None) -> config.ClientTLS:
    """How this command checks the nodes it connects to: the root's --tls-ca (or `ca`,
    from a node's settings) and --tls-client-cert/--tls-client-key, as one value passed
    down to every client."""
    root = click.get_current_context().find_root().params
    return config.ClientTLS(
        ca or root.get("tls_ca"), root.get("tls_client_cert"), root.get("tls_client_key")
    )
