"""Role changes of a file, in process: promote, demote, the gate, divergence."""

from __future__ import annotations

import io

import apsw
import pytest

from sqlrepl.core import batch, capture, gate, roles, rollback
from sqlrepl.core.db import read_meta
from sqlrepl.core.positions import Position, log_head
from sqlrepl.core.wire import FrameWriter
from sqlrepl.errors import SnapshotNeeded

from ..helpers.apps import write
from ..helpers.replica import Replica


def test_promote_continues_seq_without_resending_tables(replica: Replica) -> None:
    """A promoted follower leads epoch + 1 from the seq it applied; no full-table resend."""
    write(replica, "CREATE TABLE t(id INTEGER PRIMARY KEY, v)", "INSERT INTO t VALUES(1, 'a')")
    applied = replica.sync()
    where = roles.promote(replica.follower, "n2", "http://n2", "test", 0.0)
    assert where == Position(applied.epoch + 1, applied.seq)
    assert log_head(replica.follower) == applied.seq
    assert gate.is_open(replica.follower)
    assert roles.history(replica.follower)[-1]["start_seq"] == applied.seq
    markers = replica.follower.execute(
        "SELECT count(*) FROM _sqlrepl_log WHERE k0 IS NULL AND tid != 0"
    ).fetchall()[0][0]
    assert markers == 0
    app = apsw.Connection(str(replica.follower_path))  # apps may write now, and are captured
    app.execute("INSERT INTO t VALUES(2, 'b')")
    app.close()
    assert log_head(replica.follower) == applied.seq + 1


def test_demote_closes_the_gate_and_drops_capture(replica: Replica) -> None:
    """A demoted leader is a follower at its own head; app writes are refused."""
    write(replica, "CREATE TABLE t(id INTEGER PRIMARY KEY, v)", "INSERT INTO t VALUES(1, 'a')")
    top = log_head(replica.leader)
    assert roles.demote(replica.leader, "http://new") == Position(1, top)
    assert read_meta(replica.leader)["role"] == "follower"
    assert not gate.is_open(replica.leader)
    with pytest.raises(apsw.ConstraintError, match="read-only follower.*http://new"):
        replica.leader.execute("INSERT INTO t VALUES(2, 'b')")
    assert not capture.sync_capture(replica.leader)


def logged_changes(replica: Replica, fork: int) -> list[dict]:
    """The rows the leader's log names after `fork`, compared with the follower (which
    holds the state at the fork): what the rollback file holds when the log covers it."""
    only = rollback.logged_keys(replica.leader, fork)
    return list(rollback.differences(replica.leader, replica.follower_path, only))


def test_divergence_rule_and_changes_after_the_fork(replica: Replica) -> None:
    """Changes logged after the fork point are reported once each, as they are now."""
    write(replica, "CREATE TABLE t(id INTEGER PRIMARY KEY, v)", "INSERT INTO t VALUES(1, 'a')")
    replica.sync()
    fork = log_head(replica.leader)
    write(
        replica,
        "INSERT INTO t VALUES(2, 'b')",
        "UPDATE t SET v = 'b2' WHERE id = 2",
        "DELETE FROM t WHERE id = 1",
    )
    hist = [{"epoch": 2, "start_seq": fork}]
    assert roles.diverged(hist, Position(1, fork + 1))
    assert not roles.diverged(hist, Position(1, fork))
    assert not roles.diverged(hist, Position(2, fork + 50))
    changes = logged_changes(replica, fork)
    assert [(c["key"], c["op"], c.get("row")) for c in changes] == [
        ({"id": 2}, "upsert", {"id": 2, "v": "b2"}),
        ({"id": 1}, "delete", None),
    ]


def test_divergent_changes_of_a_five_column_key(replica: Replica) -> None:
    """Rows of a WITHOUT ROWID table with a 5-column key come out of the log whole."""
    write(
        replica,
        "CREATE TABLE w(a, b, c, d, e, v, PRIMARY KEY (a, b, c, d, e)) WITHOUT ROWID",
        "INSERT INTO w VALUES(1, 2, 3, 4, 5, 'old')",
    )
    replica.sync()
    fork = log_head(replica.leader)
    write(
        replica,
        "INSERT INTO w VALUES(1, 2, 3, 4, 6, 'new')",
        "DELETE FROM w WHERE e = 5",
    )
    changes = logged_changes(replica, fork)
    key = {"a": 1, "b": 2, "c": 3, "d": 4}
    assert [(c["key"], c["op"], c.get("row")) for c in changes] == [
        ({**key, "e": 6}, "upsert", {**key, "e": 6, "v": "new"}),
        ({**key, "e": 5}, "delete", None),
    ]


def test_a_promoted_log_never_serves_a_follower_behind_the_promotion(replica: Replica) -> None:
    """A follower one change behind the promoted node is sent to a snapshot: the changes it
    lacks arrived by replication and are in no log, so a batch would silently miss them."""
    write(replica, "CREATE TABLE t(id INTEGER PRIMARY KEY, v)", "INSERT INTO t VALUES(1, 'a')")
    applied = replica.sync()
    roles.promote(replica.follower, "n2", "http://n2", "test", 0.0)
    out = io.BytesIO()
    batch.build(replica.follower, applied.seq, FrameWriter(out.write))  # caught up: served
    with pytest.raises(SnapshotNeeded):
        batch.build(replica.follower, applied.seq - 1, FrameWriter(io.BytesIO().write))


def test_promote_opens_the_gate_and_installs_capture_in_one_commit(replica: Replica) -> None:
    """No instant where the gate is open but capture is not installed: an app write that
    commits in it would never reach any follower (found by probes during handovers)."""
    write(replica, "CREATE TABLE t(id INTEGER PRIMARY KEY, v)", "INSERT INTO t VALUES(1, 'a')")
    replica.sync()
    commits = []
    replica.follower.set_commit_hook(lambda: commits.append(1) or False)
    roles.promote(replica.follower, "n2", "http://n2", "test", 0.0)
    replica.follower.set_commit_hook(None)
    assert len(commits) == 1
    assert gate.is_open(replica.follower)
    app = apsw.Connection(str(replica.follower_path))
    app.execute("INSERT INTO t VALUES(2, 'b')")
    app.close()
    assert (
        replica.follower.execute("SELECT count(*) FROM _sqlrepl_log WHERE k0 = 2").fetchall()[0][0]
        == 1
    )


def test_rollback_holds_changes_received_before_a_promotion(replica: Replica, tmp_path) -> None:
    """A promoted follower deposed by a timeline that forked before its promotion: what it
    applied by replication after the fork is in no log, yet its rollback file holds it,
    beside its own writes; the new leader's own rows are reported as such."""
    from sqlrepl.core import snapshot

    write(replica, "CREATE TABLE t(id INTEGER PRIMARY KEY, v)", "INSERT INTO t VALUES(1, 'a')")
    replica.sync()
    fork = log_head(replica.leader)
    theirs = tmp_path / "theirs.db"
    snapshot.take(replica.leader, theirs, 0.0)
    other = apsw.Connection(str(theirs))
    other.execute("INSERT INTO t VALUES(9, 'theirs')")
    other.close()
    write(replica, "INSERT INTO t VALUES(2, 'replicated')", "UPDATE t SET v = 'a2' WHERE id = 1")
    replica.sync()
    mine = roles.promote(replica.follower, "n2", "http://n2", "test", 0.0)
    app = apsw.Connection(str(replica.follower_path))
    app.execute("INSERT INTO t VALUES(3, 'own')")
    app.close()
    history = [{"epoch": mine.epoch + 1, "start_seq": fork}]
    path = rollback.save_divergence(replica.follower, theirs, history, mine, 0.0)
    import json

    got = sorted(
        (c["op"], c["key"]["id"], (c.get("row") or {}).get("v"), (c["leader_row"] or {}).get("v"))
        for c in map(json.loads, path.read_text().splitlines())
    )
    assert got == [
        ("delete", 9, None, "theirs"),
        ("upsert", 1, "a2", "a"),
        ("upsert", 2, "replicated", None),
        ("upsert", 3, "own", None),
    ]


def test_the_rollback_file_is_on_disk_before_it_is_named(
    replica: Replica, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rollback file and its directory entry are fsynced, whole, before
    `save_divergence` returns (and so before the database is touched)."""
    import os

    from sqlrepl.core import db as core_db
    from sqlrepl.core import snapshot

    write(replica, "CREATE TABLE t(id INTEGER PRIMARY KEY, v)", "INSERT INTO t VALUES(1, 'a')")
    replica.sync()
    fork = log_head(replica.leader)
    theirs = tmp_path / "theirs.db"
    snapshot.take(replica.leader, theirs, 0.0)
    write(replica, "INSERT INTO t VALUES(2, 'lost')")
    synced: list[tuple[str, int]] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        path = os.readlink(f"/proc/self/fd/{fd}")
        synced.append((path, os.fstat(fd).st_size))
        real_fsync(fd)

    monkeypatch.setattr(core_db.os, "fsync", fsync)
    mine = Position(1, log_head(replica.leader))
    path = rollback.save_divergence(
        replica.leader, theirs, [{"epoch": 2, "start_seq": fork}], mine, 0.0
    )
    assert (str(path), path.stat().st_size) in synced
    assert str(path.parent) in {p for p, _size in synced}
    assert "lost" in path.read_text()
