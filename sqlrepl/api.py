"""The consistency contract for apps: position tokens, waiting for acknowledgements, and
reading one's own writes on a follower. Plain `sqlite3` connections; no daemon code runs
in the app.

    token(conn)                        the token ("E:S") covering conn's last commit
    wait(token, leader, acks=1)        block until `acks` followers hold it (or raise)
    connect(path, leader, acks=1)      a connection whose commit() waits for acks
    connect_follower(path, after=, max_lag=)
                                       a read-only connection to a follower's file, once
                                       it holds `after` / when it proves it is fresh
"""

from __future__ import annotations

import json
import sqlite3
import time
import urllib.parse
from pathlib import Path
from typing import Any

from . import asking
from .config import ClientTLS
from .core import tokens
from .core.positions import Position
from .core.sql import META, POSITION_VIEW
from .errors import (
    AuthError,
    ConfigError,
    DatabaseError,
    NotAcknowledged,
    SqlreplError,
    TokenForked,
    TooStale,
)
from .node import freshness

DEFAULT_TIMEOUT = 10.0
#: A commit's wait asks again after this long when the node it asks is changing roles.
ROLE_CHANGE_PAUSE = 0.05
#: Polling a file for a position: first and longest pause.
POLL_MIN, POLL_MAX = 0.0005, 0.01


def token(conn: Any, timeout: float = DEFAULT_TIMEOUT) -> str:
    """The position token covering every commit `conn` made (any DB-API connection to a
    sqlrepl file). Right after a schema change the leader brings capture in step first
    (within seconds): this waits for it, up to `timeout`."""
    deadline = time.monotonic() + timeout
    pause = POLL_MIN
    while True:
        try:
            tok, logged = _row(conn, f"SELECT token, schema_version FROM {POSITION_VIEW}")
            (role,) = _row(conn, f"SELECT value FROM {META} WHERE key = 'role'")
            (now,) = _row(conn, "PRAGMA schema_version")
        except (sqlite3.Error, IndexError) as exc:
            raise DatabaseError(f"not a sqlrepl file (no {POSITION_VIEW} view): {exc}") from exc
        if role != "leader" or logged is None or int(logged) == int(now):
            return str(tok)
        if getattr(conn, "in_transaction", False):
            raise SqlreplError(
                "this transaction changed the schema: read the token after its commit"
            )
        if time.monotonic() >= deadline:
            raise NotAcknowledged(
                f"capture did not catch up with the schema change within {timeout:g}s "
                "(is the leader daemon running?)"
            )
        time.sleep(pause)
        pause = min(pause * 2, POLL_MAX)


def _row(conn: Any, sql: str) -> tuple[Any, ...]:
    return tuple(conn.execute(sql).fetchall()[0])


def wait(
    token: str,
    leader: str,
    *,
    acks: int | str | None = 1,
    timeout: float = DEFAULT_TIMEOUT,
    auth: str | None = None,
    tls: ClientTLS | None = None,
) -> int:
    """Return once `acks` followers (a number, or "majority" of those the leader knows)
    hold `token` in their files; the number that do. Raises NotAcknowledged on timeout,
    naming how many did, and TokenForked for a token no node will ever hold. `leader` is
    the leader daemon's URL; with the URL of a follower and `acks=None`, it waits until
    that follower holds the token."""
    tokens.parse(token)
    params = {"token": token, "timeout": f"{timeout:g}"}
    if acks is not None:
        params["acks"] = str(acks)
    body = asking.get(leader, "/wait", params, timeout, auth, tls)
    return int(body["acks"]) if "acks" in body else 0


class SyncConnection(sqlite3.Connection):
    """A sqlite3 connection whose `commit()` returns once the commit is acknowledged by
    `acks` followers (semi-synchronous, like MySQL's AFTER_SYNC: other readers of the
    leader file may see the commit before it is acknowledged)."""

    sqlrepl_leader: str
    sqlrepl_acks: int | str
    sqlrepl_timeout: float
    sqlrepl_auth: str | None
    #: The token of the last acknowledged commit.
    last_token: str | None = None

    def _acknowledged_by(
        self, leader: str, acks: int | str, timeout: float, auth: str | None
    ) -> SyncConnection:
        """Count acknowledgements at `leader` (set once, by `connect`)."""
        self.sqlrepl_leader, self.sqlrepl_acks = leader, acks
        self.sqlrepl_timeout, self.sqlrepl_auth = timeout, auth
        return self

    def commit(self) -> None:
        super().commit()
        self.wait()

    def wait(self) -> str:
        """Wait for acknowledgements of everything committed so far (for autocommit
        statements, `isolation_level=None`); the token that covers it. The commit is made
        whatever happens here: if it is not acknowledged in time (the leader is changing,
        this node was just promoted, the followers lag), NotAcknowledged says so, with
        the commit's token."""
        done = token(self, self.sqlrepl_timeout)
        deadline = time.monotonic() + self.sqlrepl_timeout
        pause = ROLE_CHANGE_PAUSE
        while True:
            try:
                wait(
                    done,
                    self.sqlrepl_leader,
                    acks=self.sqlrepl_acks,
                    timeout=max(0.0, deadline - time.monotonic()),
                    auth=self.sqlrepl_auth,
                )
                break
            except TokenForked:
                raise
            except NotAcknowledged as exc:
                raise NotAcknowledged(f"commit {done} not acknowledged: {exc}", done) from exc
            except SqlreplError as exc:
                # A node between two roles (a follower promoted a moment ago still answers
                # as one): ask again while time is left.
                if isinstance(exc, AuthError) or time.monotonic() + pause >= deadline:
                    message = f"commit {done} was made but not acknowledged: {exc}"
                    raise NotAcknowledged(message, done) from exc
                time.sleep(pause)
                pause = min(pause * 2, 0.5)
        self.last_token = done
        return done

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> Any:
        if exc_type is None:
            self.commit()  # the C implementation would not call our commit()
            return False
        return super().__exit__(exc_type, exc, tb)


def connect(
    path: str | Path,
    leader: str,
    *,
    acks: int | str = 1,
    timeout: float = DEFAULT_TIMEOUT,
    auth: str | None = None,
    **kwargs: Any,
) -> SyncConnection:
    """`sqlite3.connect(path, **kwargs)` on a leader file, whose `commit()` waits until
    `acks` followers hold the commit (NotAcknowledged after `timeout`). `leader` is the
    URL of the leader daemon running on this file."""
    if not (acks == "majority" or str(acks).isdigit()):
        raise ConfigError(f"acks must be a number or 'majority', not {acks!r}")
    conn = sqlite3.connect(path, factory=SyncConnection, **kwargs)
    assert isinstance(conn, SyncConnection)
    return conn._acknowledged_by(leader, acks, timeout, auth)


def connect_follower(
    path: str | Path,
    *,
    after: str | None = None,
    max_lag: float | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    **kwargs: Any,
) -> sqlite3.Connection:
    """A read-only connection to a follower's file (`mode=ro`), returned once the file
    holds the token `after` (waiting on the file itself, up to `timeout`), and only if
    the follower can prove it is no more than `max_lag` seconds behind its leader."""
    uri = f"file:{urllib.parse.quote(str(path))}?mode=ro"
    probe = sqlite3.connect(uri, uri=True, timeout=timeout)
    try:
        if after is not None:
            _wait_on_file(probe, tokens.parse(after), timeout, str(path))
        if max_lag is not None:
            _check_fresh(probe, Path(path), max_lag)
    except sqlite3.Error as exc:
        raise DatabaseError(f"cannot read {path}: {exc}") from exc
    finally:
        probe.close()
    return sqlite3.connect(uri, uri=True, **kwargs)


def _wait_on_file(conn: sqlite3.Connection, want: Position, timeout: float, path: str) -> None:
    deadline = time.monotonic() + timeout
    pause = POLL_MIN
    while True:
        have, history = _file_position(conn)
        if tokens.holds(history, have, want):
            return
        if time.monotonic() >= deadline:
            raise NotAcknowledged(
                f"{path} is at {tokens.format_token(have)}, not yet at token "
                f"{tokens.format_token(want)}, after {timeout:g}s"
            )
        time.sleep(pause)
        pause = min(pause * 2, POLL_MAX)


def _file_position(conn: sqlite3.Connection) -> tuple[Position, list[dict[str, Any]]]:
    try:
        epoch, seq = conn.execute(f"SELECT epoch, seq FROM {POSITION_VIEW}").fetchone()
    except sqlite3.OperationalError as exc:
        raise DatabaseError(f"not a sqlrepl file (no {POSITION_VIEW} view): {exc}") from exc
    raw = conn.execute(f"SELECT value FROM {META} WHERE key = 'history'").fetchone()
    return Position(int(epoch), int(seq)), json.loads(raw[0] if raw and raw[0] else "[]")


def _check_fresh(conn: sqlite3.Connection, path: Path, max_lag: float) -> None:
    role = conn.execute(f"SELECT value FROM {META} WHERE key = 'role'").fetchone()
    if role and role[0] == "leader":
        return  # the leader's file is the freshest there is
    lag = freshness.file_lag(path)
    if lag is None:
        raise TooStale(
            f"{path} has no freshness proof beside it: is a follower daemon running on it?"
        )
    if lag > max_lag:
        raise TooStale(f"{path} may be {lag:g}s behind its leader (max_lag {max_lag:g}s)")
