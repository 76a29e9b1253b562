"""A node's settings: one TOML file, `SQLREPL_*` environment variables, then flags.

    db = "/var/lib/app/app.db"              # required
    listen = "0.0.0.0:7300"
    advertise = "http://10.0.0.1:7300"      # needed with a wildcard listen address
    members = ["http://10.0.0.2:7300", "http://10.0.0.3:7300"]
    coordinator = "etcd://10.0.0.9:2379/app"   # absent: static
    ttl = 10
    candidate = true
    max_lag = 1000
    token_file = "/etc/sqlrepl/token"
    log_limit = 1000000
    retention = 86400.0
    trim_interval = 10.0                    # accepted and ignored (the log bounds itself)
    min_sync_replicas = 0
    max_replica_lag = 10.0
    frame_size = 4194304                    # bytes: the longest frame of a batch
    log_format = "text"                     # or "json"
    tls_cert = "/etc/sqlrepl/node.pem"      # serve https (with tls_key)
    tls_key = "/etc/sqlrepl/node.key"
    tls_ca = "/etc/sqlrepl/ca.pem"          # check the other nodes' certificates
    tls_client_ca = "/etc/sqlrepl/ca.pem"   # require client certificates (mutual TLS)

Each key can be overridden by `SQLREPL_<KEY>` (upper case: `SQLREPL_LISTEN`,
`SQLREPL_MEMBERS` as a comma-separated list), and that by the matching flag. Unknown keys
and bad values are errors naming the key and where it came from.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from . import config
from .errors import ConfigError

ENV_PREFIX = "SQLREPL_"
LOG_FORMATS = ("text", "json")


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("must be a non-empty string")
    return value


def _number(kind: type, minimum: float, what: str) -> Callable[[Any], Any]:
    """A parser of numbers of `kind` (int or float), at least `minimum`."""

    def check(value: Any) -> Any:
        try:
            if isinstance(value, bool):
                raise ValueError
            number = kind(value)
        except ValueError:
            raise ValueError(f"must be {what}") from None
        if number < minimum:
            raise ValueError(f"must be at least {minimum:g}")
        return number

    return check


def _int(minimum: int) -> Callable[[Any], int]:
    return _number(int, minimum, "an integer")


_seconds = _number(float, 0, "a number of seconds")


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("1", "true", "yes", "on"):
        return True
    if str(value).lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false")


def _urls(value: Any) -> list[str]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(u, str) for u in items):
        raise ValueError("must be a list of URLs")
    urls = [u.strip().rstrip("/") for u in items if u.strip()]
    for url in urls:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"{url!r} is not http://HOST:PORT")
    return urls


def _listen(value: Any) -> str:
    config.parse_listen(_text(value))
    return str(value)


def _frame_size(value: Any) -> int:
    size = _int(config.MIN_FRAME_SIZE)(value)
    if size > config.MAX_FRAME_SIZE:
        raise ValueError(f"must be at most {config.MAX_FRAME_SIZE}")
    return size


def _log_format(value: Any) -> str:
    if value not in LOG_FORMATS:
        raise ValueError(f"must be one of {', '.join(LOG_FORMATS)}")
    return str(value)


#: key -> how a raw value becomes a setting (ValueError: why not).
PARSERS: dict[str, Callable[[Any], Any]] = {
    "db": _text,
    "listen": _listen,
    "advertise": _text,
    "members": _urls,
    "coordinator": _text,
    "ttl": _int(1),
    "candidate": _bool,
    "max_lag": _int(0),
    "token_file": _text,
    "log_limit": _int(1),
    "retention": _seconds,
    "trim_interval": _seconds,
    "min_sync_replicas": _int(0),
    "max_replica_lag": _seconds,
    "frame_size": _frame_size,
    "log_format": _log_format,
    "tls_cert": _text,
    "tls_key": _text,
    "tls_client_ca": _text,
    "tls_ca": _text,
}


#: key -> what it means, for docs/configuration.md (scripts/docs.py; a test checks that
#: every key has a line).
HELP: dict[str, str] = {
    "db": "the database file (required)",
    "listen": "the address to listen on, as `--listen`",
    "advertise": "the URL others reach this node at, as `--advertise` (default: from `listen`;"
    " required with a wildcard address)",
    "members": "the other nodes' URLs: where to find the leader",
    "coordinator": "`etcd://HOST:PORT/CLUSTER` for automatic failover (absent: static)",
    "ttl": "the leader lease's TTL in seconds (etcd)",
    "candidate": "may this node be promoted (by `promote`, `switchover` or etcd)",
    "max_lag": "the most changes a candidate may lag its leader by and still be promoted",
    "token_file": "a file holding the shared token (else `$SQLREPL_TOKEN`)",
    "log_limit": "changes the leader's log keeps (it bounds itself in the capture path)",
    "retention": "seconds a silent follower stays in the leader's list (and status)",
    "trim_interval": "accepted and ignored, like the leader's `--trim-interval`",
    "min_sync_replicas": "writes are refused while fewer followers than this are connected"
    " and fresh (docs/consistency.md)",
    "max_replica_lag": "... within this many seconds of the head",
    "frame_size": "the longest frame of a batch the leader sends, in bytes: larger"
    " transactions and values go in more frames (docs/limits.md)",
    "log_format": "`text` or `json` (one object per line)",
    "tls_cert": "serve https with this certificate (with `tls_key`)",
    "tls_key": "the certificate's key",
    "tls_client_ca": "serve only clients whose certificate this CA signed (mutual TLS)",
    "tls_ca": "the CA bundle other nodes' certificates are checked against",
}


@dataclass
class NodeSettings:
    db: str = ""
    listen: str = config.DEFAULT_LEADER_LISTEN
    advertise: str | None = None
    members: list[str] = field(default_factory=list)
    coordinator: str | None = None
    ttl: int = config.DEFAULT_TTL
    candidate: bool = True
    max_lag: int = config.DEFAULT_MAX_LAG
    token_file: str | None = None
    log_limit: int = config.DEFAULT_LOG_LIMIT
    retention: float = config.DEFAULT_RETENTION
    #: Accepted and ignored, like the leader's --trim-interval (the log bounds itself).
    trim_interval: float = config.DEFAULT_TRIM_INTERVAL
    min_sync_replicas: int = 0
    max_replica_lag: float = config.DEFAULT_MAX_REPLICA_LAG
    frame_size: int = config.DEFAULT_FRAME_SIZE
    log_format: str = "text"
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None
    tls_ca: str | None = None
    #: Where each key's value came from ("default", the file, the variable, the flag).
    sources: dict[str, str] = field(default_factory=dict)

    def effective(self) -> dict[str, Any]:
        """Every setting with its value and where it came from (for `config check`)."""
        return {
            f.name: {"value": getattr(self, f.name), "from": self.sources.get(f.name, "default")}
            for f in fields(self)
            if f.name != "sources"
        }


def load(
    path: Path | None,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> NodeSettings:
    """The settings from `path` (TOML), then `env`, then `flags` (None: not given)."""
    settings = NodeSettings()
    if path is not None:
        _apply(settings, _read(path), str(path))
    environ = os.environ if env is None else env
    from_env = {
        k[len(ENV_PREFIX) :].lower(): v
        for k, v in environ.items()
        if k.startswith(ENV_PREFIX) and k[len(ENV_PREFIX) :].lower() in PARSERS
    }
    _apply(settings, from_env, "the environment", name=lambda k: ENV_PREFIX + k.upper())
    given = {k: v for k, v in (flags or {}).items() if v is not None}
    _apply(settings, given, "the command line", name=lambda k: "--" + k.replace("_", "-"))
    if not settings.db:
        raise ConfigError(f"no database: set db in {path or 'a --config file'} or --db")
    if settings.coordinator is not None:
        from .coord import from_url

        from_url(settings.coordinator, settings.ttl)
    return settings


def _read(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc


def _apply(
    settings: NodeSettings,
    values: Mapping[str, Any],
    where: str,
    name: Callable[[str], str] = lambda k: k,
) -> None:
    for key, raw in values.items():
        parse = PARSERS.get(key)
        if parse is None:
            known = ", ".join(sorted(PARSERS))
            raise ConfigError(f"unknown key {key!r} in {where} (known: {known})")
        try:
            value = parse(raw)
        except (ValueError, TypeError, ConfigError) as exc:
            raise ConfigError(f"{name(key)} in {where}: {raw!r} {exc}") from None
        setattr(settings, key, value)
        settings.sources[key] = where
