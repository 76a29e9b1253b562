"""Capture → batch → apply in one process, on real files."""

from __future__ import annotations

import apsw
import pytest

from .dump import dump
from .replica import Replica


def write(r: Replica, *sql: str, params=()):
    app = apsw.Connection(str(r.leader_path))
    app.set_busy_timeout(5000)
    try:
        for s in sql:
            app.execute(s, params)
    finally:
        app.close()


def test_insert_update_delete_replicate(replica: Replica) -> None:
    """Rows inserted, updated and deleted on the leader end the same on the follower."""
    write(replica, "CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, score REAL)")
    replica.sync()
    write(
        replica,
        "INSERT INTO t(name, score) VALUES('a', 1.5), ('b', 2.25), ('c', NULL)",
        "UPDATE t SET score = 9 WHERE name = 'a'",
        "DELETE FROM t WHERE name = 'b'",
    )
    pos = replica.sync()
    assert pos.seq > 0
    assert dump(replica.leader_path) == dump(replica.follower_path)
