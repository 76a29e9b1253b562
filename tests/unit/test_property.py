"""Hypothesis: random writes on the leader, then leader and follower hold the same content."""

from __future__ import annotations

import tempfile
from pathlib import Path

import apsw
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ..helpers.dump import dump
from ..helpers.replica import Replica

TABLES = {
    "r": "CREATE TABLE r(a, b)",
    "i": "CREATE TABLE i(id INTEGER PRIMARY KEY, a, b UNIQUE)",
    "w": "CREATE TABLE w(a, b, PRIMARY KEY(a)) WITHOUT ROWID",
}

values = st.one_of(
    st.none(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.binary(max_size=20),
)
keys = st.integers(min_value=0, max_value=8)
table = st.sampled_from(sorted(TABLES))

ops = st.one_of(
    st.tuples(st.just("insert"), table, keys, values, values),
    st.tuples(st.just("update"), table, keys, values, values),
    st.tuples(st.just("rekey"), table, keys, keys, values),
    st.tuples(st.just("delete"), table, keys, values, values),
    st.tuples(st.just("sync"), table, keys, values, values),
    st.tuples(st.just("rollback"), table, keys, values, values),
)


def run(app: apsw.Connection, op: tuple) -> None:
    kind, t, k, x, y = op
    key = "a" if t != "i" else "id"
    if kind == "insert":
        app.execute(
            f"INSERT OR REPLACE INTO {t}({key}, {'b' if t != 'r' else 'b'}) VALUES(?, ?)", (k, y)
        )
    elif kind == "update":
        app.execute(f"UPDATE OR REPLACE {t} SET b = ? WHERE {key} = ?", (y, k))
    elif kind == "rekey":
        app.execute(f"UPDATE OR REPLACE {t} SET {key} = ? WHERE {key} = ?", (x, k))
    elif kind == "delete":
        app.execute(f"DELETE FROM {t} WHERE {key} = ?", (k,))
    elif kind == "rollback":
        app.execute("BEGIN")
        app.execute(f"DELETE FROM {t}")
        app.execute("ROLLBACK")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ops, max_size=40))
def test_random_operations_replicate_exactly(operations: list[tuple]) -> None:
    """Any sequence of writes and syncs leaves the follower equal to the leader."""
    with tempfile.TemporaryDirectory() as tmp:
        leader = Path(tmp) / "leader.db"
        app = apsw.Connection(str(leader))
        for ddl in TABLES.values():
            app.execute(ddl)
        replica = Replica(Path(tmp), leader)
        try:
            for op in operations:
                if op[0] == "sync":
                    replica.sync()
                else:
                    run(app, op)
            replica.sync()
            assert dump(leader) == dump(replica.follower_path)
        finally:
            app.close()
            replica.close()
