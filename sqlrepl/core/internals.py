"""sqlrepl's own tables in a leader file: whose they are, which are missing, rebuilding them.

An app or an ORM migration can drop `_sqlrepl_*` tables (Alembic's autogenerate proposes
it for tables it does not know). The leader checks after every schema change and rebuilds
them under the identity it knows; a start on a file without them refuses to make it the
leader of a new cluster when a sidecar says it belonged to one (`node/identity.py`).
"""

from __future__ import annotations

from typing import Any

import apsw

from .capture import SCHEMA_TID, install_within
from .db import drop_triggers, has_table, has_view, read_meta, transaction, write_meta
from .positions import log_head
from .sql import (
    CAPTURE_PREFIX,
    FOLLOWERS,
    LOG,
    META,
    POSITION_VIEW,
    TABLES,
    create_extras,
    create_internal_tables,
)


def cluster_of(conn: apsw.Connection) -> str | None:
    """The cluster identity recorded in the file (None: none, or its meta table is gone)."""
    if not has_table(conn, META):
        return None
    cluster = read_meta(conn).get("cluster")
    return str(cluster) if cluster else None


def missing_internals(conn: apsw.Connection) -> list[str]:
    """sqlrepl's own tables a leader file lacks (dropped by an app or a migration?)."""
    return [t for t in (LOG, META, TABLES) if not has_table(conn, t)]


def missing_extras(conn: apsw.Connection) -> list[str]:
    """sqlrepl's objects a leader file lacks that hold nothing replication needs (the
    followers' list, the position view): re-created as they were, nothing resent."""
    gone = [] if has_table(conn, FOLLOWERS) else [FOLLOWERS]
    return gone + ([] if has_view(conn) else [POSITION_VIEW])


def recreate_extras(conn: apsw.Connection) -> bool:
    """Put back what `missing_extras` found, only while the other tables are in place
    (checked in the same transaction: a migration may drop them meanwhile, and an empty
    meta table re-created here would unmake the leader). False if they are not."""
    with transaction(conn):
        if missing_internals(conn):
            return False  # the next look rebuilds everything
        conn.execute(create_extras())
    return True


def rebuild(conn: apsw.Connection, meta: dict[str, Any], head: int, log_limit: int) -> None:
    """Re-create a leader file's dropped internal tables under its identity (`meta`, as
    the daemon knows it): the log starts over after `head` (followers behind it
    re-bootstrap) and every table is registered anew and resent whole."""
    with transaction(conn):
        conn.execute(create_internal_tables())
        if not read_meta(conn).get("cluster"):
            write_meta(conn, **meta)
        if log_head(conn) < head:
            conn.execute(f"INSERT INTO {LOG}(seq, tid, k0) VALUES(?, ?, NULL)", (head, SCHEMA_TID))
        conn.execute(f"DELETE FROM {TABLES}")
        drop_triggers(conn, CAPTURE_PREFIX)
        write_meta(conn, role="leader", trimmed=log_head(conn), schema_version=-1)
        install_within(conn, resend_new=True, log_limit=log_limit)
