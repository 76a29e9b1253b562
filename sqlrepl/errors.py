"""The one exception tree of sqlrepl.

    SqlreplError                 anything sqlrepl reports on purpose
    ├── ConfigError              bad options, token, listen address
    ├── DatabaseError            a file is not SQLite, belongs elsewhere, or is the wrong role
    │   ├── ApplyError           a batch could not be applied here (nothing of it was kept)
    │   └── StorageError         the disk refused a write (full, read-only, failing): retry
    ├── ProtocolError            a peer answered with something malformed, corrupt or truncated
    │   └── AuthError            the peer refused our token (401)
    ├── StaleEpochError          a batch from an older epoch than we already accepted
    ├── Refused                  a node refused an action (promote, switchover) and said why
    ├── SnapshotNeeded           the leader's log no longer covers our position: re-bootstrap
    │   └── Diverged             the follower holds changes the leader's timeline lacks
    ├── PeerUnavailable          a peer could not be reached (retry later)
    ├── NotAcknowledged          a wait for a position token ran out of time (says how
    │                            many followers acknowledged it)
    ├── TokenForked              a position token past a fork: no node of this timeline
    │                            will ever hold it
    ├── TooStale                 a follower cannot prove it is as fresh as asked
    └── TaskFailed               a daemon's background task failed unexpectedly (the
                                 traceback is in the log; the role ended)

The CLI turns every one of these into a one-line message and exit code 1.
"""

from __future__ import annotations


class SqlreplError(Exception):
    """Base class of every error sqlrepl raises on purpose."""


class ConfigError(SqlreplError):
    """Options, token or listen address are wrong."""


class DatabaseError(SqlreplError):
    """A database file is unusable for what was asked (not SQLite, wrong cluster, wrong role)."""


class Unappliable(SqlreplError):
    """A whole batch arrived and could not be applied here (the follower's file refuses
    it, or it breaks the protocol): retried, then this follower re-bootstraps."""


class ApplyError(DatabaseError):
    """A batch could not be applied (e.g. a schema change this SQLite cannot run).

    The batch is rolled back whole; the follower keeps retrying and reports the error.
    """


class StorageError(DatabaseError):
    """The disk refused a write (full, read-only, failing). Nothing half-written is kept;
    a follower retries with backoff and reports it."""


class ProtocolError(SqlreplError):
    """A peer sent something malformed, corrupt or truncated."""


class AuthError(ProtocolError):
    """The peer refused our token."""


class StaleEpochError(SqlreplError):
    """A batch carries an epoch older than the one this node already accepted."""


class Refused(SqlreplError):
    """A node refused an action (promote, switchover), with the reason."""


class SnapshotNeeded(SqlreplError):
    """The leader no longer has the log after our position."""


class Diverged(SnapshotNeeded):
    """This follower's position is not on its leader's timeline (a fork): its content is
    saved aside before it resyncs from a snapshot."""


class PeerUnavailable(SqlreplError):
    """A peer could not be reached."""


class NotAcknowledged(SqlreplError):
    """A wait for a position token ran out of time: fewer nodes than asked hold it.
    `token`: the commit's position, when a commit was made (it stays committed: check it
    later with `wait`)."""

    def __init__(self, message: str, token: str | None = None) -> None:
        super().__init__(message)
        self.token = token


class TokenForked(SqlreplError):
    """A position token lies past a fork point: its write was never part of this timeline
    (a deposed leader's unreplicated write), so no wait for it can ever end."""


class TooStale(SqlreplError):
    """A follower cannot prove that it is as fresh as the caller asked."""


class TaskFailed(SqlreplError):
    """A daemon's background task raised an unexpected exception: logged with its
    traceback, and the role ended through the supervisor."""
