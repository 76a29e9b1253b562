"""Options from flags, files and the environment. Only this module reads env and token files."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from .errors import ConfigError

TOKEN_ENV = "SQLREPL_TOKEN"
DEFAULT_LEADER_LISTEN = "127.0.0.1:7300"
DEFAULT_FOLLOWER_LISTEN = "127.0.0.1:7301"
#: etcd: seconds the leader lease lasts.
DEFAULT_TTL = 10
#: Most changes a candidate may lag behind what it knows of its leader and still be promoted
#: (automatically, or without --force). 0 would leave a cluster leaderless whenever the
#: leader dies while every follower is a few changes behind (Patroni: maximum_lag_on_failover).
DEFAULT_MAX_LAG = 1000


def parse_listen(value: str) -> tuple[str, int]:
    """'HOST:PORT' or '[v6]:PORT' -> (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{value!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_token(token_file: Path | None) -> str | None:
    """The shared token: from --token-file, else $SQLREPL_TOKEN, else none."""
    if token_file is not None:
        try:
            token = token_file.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read token file {token_file}: {exc.strerror}") from exc
        if not token:
            raise ConfigError(f"token file {token_file} is empty")
        return token
    return os.environ.get(TOKEN_ENV) or None


def check_exposure(host: str, token: str | None) -> None:
    """Listening beyond loopback requires a token."""
    if token is None and not is_loopback(host):
        raise ConfigError(
            f"refusing to listen on {host} without a token: set --token-file or ${TOKEN_ENV} "
            "(only loopback addresses may run without one)"
        )
