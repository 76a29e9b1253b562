"""Which cluster a leader file belongs to, remembered beside it (`DB.sqlrepl-cluster`).

The cluster identity lives in the file's `_sqlrepl_meta`. An app or an ORM migration can
drop that table (Alembic's autogenerate proposes it for tables it does not know); a
leader started on the file afterwards would make it the leader of a *new* cluster, and
every follower would refuse it. The sidecar, written once when a leader starts, lets the
next start tell "a new file" from "a file whose sqlrepl tables were dropped" and refuse
the latter with a clear line. Daemon-only state: never in the app's file.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any

import apsw

from ...core import internals, sidecars, tempfiles
from ...errors import DatabaseError

log = logging.getLogger("sqlrepl.leader")


def sidecar(db: Path) -> Path:
    return sidecars.beside(db, sidecars.CLUSTER)


def recorded(db: Path) -> str | None:
    try:
        return sidecar(db).read_text().strip() or None
    except OSError:
        return None


def check(db: Path, cluster: str | None) -> None:
    """Refuse to start a new cluster on a file that belonged to one (its tables dropped)."""
    before = recorded(db)
    if cluster is None and before is not None:
        raise DatabaseError(
            f"{db} was the leader of sqlrepl cluster {before}, but its _sqlrepl_ tables are "
            "gone (dropped by an app or a migration?): refusing to make it the leader of a "
            f"new cluster. Restore it from a snapshot (sqlrepl restore), or remove "
            f"{sidecar(db)} to start a new cluster on this file"
        )


def remember(db: Path, cluster: str) -> None:
    """Record the file's cluster (only when it changed: a start writes nothing else)."""
    if recorded(db) == cluster:
        return
    path = sidecar(db)
    tmp = tempfiles.temp_path(path)
    with contextlib.suppress(OSError):
        tmp.write_text(cluster + "\n")
        os.replace(tmp, path)


def put_back_extras(conn: apsw.Connection) -> None:
    """Re-create, as they were, the objects of sqlrepl's an app dropped that hold nothing
    replication needs (the followers' list, the position view)."""
    if (extras := internals.missing_extras(conn)) and internals.recreate_extras(conn):
        log.warning("%s: re-created", dropped(extras))


def dropped(missing: list[str]) -> str:
    return f"sqlrepl's own tables {', '.join(missing)} were dropped (by an app or a migration?)"


def rebuild(
    conn: apsw.Connection, missing: list[str], meta: dict[str, Any], head: int, log_limit: int
) -> str:
    """In the database thread, after a schema change: rebuild the dropped tables under
    the same identity (`meta`) and say so loudly; return what was said."""
    internals.rebuild(conn, meta, head, log_limit)
    said = (
        f"{dropped(missing)}; rebuilt under cluster {meta['cluster']}: followers resync. "
        "Keep _sqlrepl_* out of migrations (docs/apps.md: ORM users)"
    )
    log.error("%s", said)
    return said
