"""The consistency contract with real daemons: position tokens from any driver, waits for
acknowledgements, read-your-writes and bounded staleness on followers, forks."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

import sqlrepl

from ..helpers.apps import accepts_writes, app_db, values, wait_open_leader
from ..helpers.daemons import Background, Cluster, Daemon, http_status, insert, wait_until
from ..helpers.daemons import sqlrepl as run
from ..helpers.dump import log_head
from ..helpers.etcd import EtcdServer


def token_of(db: Path) -> str:
    conn = sqlite3.connect(db)
    try:
        return sqlrepl.token(conn)
    finally:
        conn.close()


def seq_of(token: str) -> int:
    return int(token.split(":")[1])


@pytest.fixture
def trio(tmp_path: Path, cluster: Cluster) -> tuple[Path, Daemon, Daemon, Daemon]:
    db = app_db(tmp_path / "a.db")
    leader = cluster.leader(db)
    b = cluster.follower(tmp_path / "b.db", leader)
    c = cluster.follower(tmp_path / "c.db", leader)
    return db, leader, b, c


def test_every_driver_reads_a_token_that_covers_its_commit(
    tmp_path: Path, trio: tuple[Path, Daemon, Daemon, Daemon]
) -> None:
    """The sqlite3 shell and Python read the same token after a commit; it covers the
    commit (also one that created a table), and a follower holding it has the row."""
    db, leader, b, _c = trio
    shell = subprocess.run(
        [
            "sqlite3",
            str(db),
            "INSERT INTO t(v) VALUES('shell'); SELECT token FROM _sqlrepl_position;",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert shell == token_of(db) and seq_of(shell) == log_head(db)
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE fresh(id INTEGER PRIMARY KEY, v TEXT)")
    conn.execute("INSERT INTO fresh(v) VALUES('new table')")
    conn.commit()
    token = sqlrepl.token(conn)  # waits until capture caught up with the new table
    conn.close()
    reader = sqlrepl.connect_follower(tmp_path / "b.db", after=token)
    assert reader.execute("SELECT v FROM fresh").fetchall() == [("new table",)]
    assert reader.execute("SELECT v FROM t").fetchall() == [("shell",)]
    (on_follower,) = reader.execute("SELECT token FROM _sqlrepl_position").fetchone()
    assert seq_of(on_follower) >= seq_of(token)
    reader.close()


def test_wait_returns_when_enough_followers_hold_a_token_and_fails_loudly_otherwise(
    trio: tuple[Path, Daemon, Daemon, Daemon],
) -> None:
    """acks=2 and majority succeed with both followers up; with one stopped, acks=2
    fails after the timeout naming how many acknowledged, acks=1 and majority (of three
    nodes, the leader counted: one acknowledgement) succeed; the CLI says the same with
    its exit codes."""
    db, leader, b, c = trio
    insert(db, "one")
    token = token_of(db)
    assert sqlrepl.wait(token, leader.url, acks=2, timeout=10) == 2
    assert sqlrepl.wait(token, leader.url, acks="majority", timeout=10) >= 1
    c.stop()
    insert(db, "two")
    token = token_of(db)
    assert sqlrepl.wait(token, leader.url, acks=1, timeout=10) == 1
    with pytest.raises(sqlrepl.NotAcknowledged, match="1 of the 2 acknowledgements"):
        sqlrepl.wait(token, leader.url, acks=2, timeout=0.5)
    assert sqlrepl.wait(token, leader.url, acks="majority", timeout=10) == 1
    ok = run("wait", leader.url, token, "--acks", "1", "--timeout", "10")
    assert ok.returncode == 0, ok.stderr
    assert "acknowledged by 1 follower" in ok.stdout
    short = run("wait", leader.url, token, "--acks", "2", "--timeout", "0.3")
    assert short.returncode == 1 and "1 of the 2 acknowledgements" in short.stderr
    on_follower = run("wait", b.url, token, "--json")
    assert on_follower.returncode == 0, on_follower.stderr
    assert json.loads(on_follower.stdout)["token"] == token
    for bad in (["nonsense"], [token, "--acks", "most"], [token, "--timeout", "-1"]):
        result = run("wait", leader.url, *bad)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    for query in ("token=3", "token=1:1&acks=-1", "token=1:1&timeout=x", "token=1:1&timeout=1e9"):
        assert http_status(f"{leader.url}/wait?{query}") == 400, query
    assert http_status(f"{b.url}/wait?token=1:1&acks=1") == 400  # the leader counts acks
    assert http_status(f"{leader.url}/wait?token=99:1&timeout=0") == 409  # a newer epoch


def test_sync_commits_are_readable_on_the_follower_at_once(
    tmp_path: Path, trio: tuple[Path, Daemon, Daemon, Daemon]
) -> None:
    """A connection whose commit waits for 2 acks: each commit is on both followers' files
    when commit() returns (read without waiting); an async commit is read back through
    connect_follower(after=token)."""
    db, leader, _b, _c = trio
    conn = sqlrepl.connect(db, leader.url, acks=2, timeout=10)
    for i in range(100):
        conn.execute("INSERT INTO t(v) VALUES(?)", (f"sync{i}",))
        conn.commit()
        for name in ("b.db", "c.db"):
            reader = sqlrepl.connect_follower(tmp_path / name, after=conn.last_token, timeout=0)
            got = reader.execute("SELECT count(*) FROM t WHERE v = ?", (f"sync{i}",)).fetchone()
            reader.close()
            assert got == (1,), f"sync{i} not on {name} after its commit was acknowledged"
    with sqlrepl.connect(db, leader.url, acks=2) as ctx:
        ctx.execute("INSERT INTO t(v) VALUES('in a with block')")
    assert ctx.last_token is not None
    conn.close()
    for i in range(50):
        insert(db, f"async{i}")
        reader = sqlrepl.connect_follower(tmp_path / "b.db", after=token_of(db), timeout=10)
        got = reader.execute("SELECT count(*) FROM t WHERE v = ?", (f"async{i}",)).fetchone()
        reader.close()
        assert got == (1,)


def test_a_token_past_a_fork_fails_at_once_everywhere(tmp_path: Path, cluster: Cluster) -> None:
    """A write the old leader took while its daemon was frozen, then a forced promotion:
    waiting for that write's token on the new leader, its file, or over the CLI fails at
    once naming the fork, never an endless wait."""
    db = app_db(tmp_path / "a.db")
    a = cluster.leader(db)
    b = cluster.follower(tmp_path / "b.db", a)
    insert(db, "kept")
    kept = token_of(db)
    sqlrepl.wait(kept, a.url, acks=1)
    assert a.proc is not None
    os.kill(a.proc.pid, signal.SIGSTOP)
    try:
        insert(db, "lost")  # the gate is open; the frozen daemon ships nothing
        lost = token_of(db)
        promoted = run("promote", b.url, "--force")
        assert promoted.returncode == 0, promoted.stderr
        wait_until(lambda: http_status(b.url + "/leader") == 200, "b to serve as the leader")
        started = time.monotonic()
        with pytest.raises(sqlrepl.TokenForked, match="fork"):
            sqlrepl.wait(lost, b.url, acks=0, timeout=30)
        with pytest.raises(sqlrepl.TokenForked, match="fork"):
            sqlrepl.connect_follower(tmp_path / "b.db", after=lost, timeout=30)
        cli = run("wait", b.url, lost, "--acks", "0", "--timeout", "30")
        assert cli.returncode == 1 and "fork" in cli.stderr, cli.stderr
        assert time.monotonic() - started < 30, "a forked token was waited for"
        assert sqlrepl.wait(kept, b.url, acks=0) == 0  # the kept write is on the timeline
    finally:
        os.kill(a.proc.pid, signal.SIGCONT)


def test_max_lag_needs_a_proof_of_freshness(tmp_path: Path, cluster: Cluster) -> None:
    """connect_follower(max_lag=) accepts a streaming follower's file, refuses one whose
    daemon stopped once its proof is older than the bound, and one with no proof."""
    db = app_db(tmp_path / "a.db")
    leader = cluster.leader(db)
    follower = cluster.follower(tmp_path / "b.db", leader)
    insert(db, "x")
    sqlrepl.wait(token_of(db), leader.url, acks=1)
    sqlrepl.connect_follower(tmp_path / "b.db", max_lag=1).close()
    follower.stop()

    def refused() -> bool:
        try:
            sqlrepl.connect_follower(tmp_path / "b.db", max_lag=1).close()
            return False
        except sqlrepl.TooStale as exc:
            assert "behind its leader" in str(exc)
            return True

    wait_until(refused, "a stopped follower's file to count as stale")
    (tmp_path / "b.db.sqlrepl-fresh").unlink()
    with pytest.raises(sqlrepl.TooStale, match="no freshness proof"):
        sqlrepl.connect_follower(tmp_path / "b.db", max_lag=1000)
    sqlrepl.connect_follower(db, max_lag=0).close()  # the leader's own file is fresh


def test_a_lone_commit_after_a_quiet_spell_is_seen_at_once(
    tmp_path: Path, cluster: Cluster
) -> None:
    """A commit publishes its frames in the WAL index just after writing them (the file
    event): the leader looks again, so a single commit of an app that keeps its
    connection open never waits for the next write or the 5 s fallback look (it did,
    about half the time)."""
    db = app_db(tmp_path / "a.db")
    leader = cluster.leader(db)
    cluster.follower(tmp_path / "b.db", leader)
    app = sqlite3.connect(db)  # kept open, like a pool: closing it would write again
    try:
        for i in range(8):
            app.execute("INSERT INTO t(v) VALUES(?)", (f"lone{i}",))
            app.commit()
            want = seq_of(sqlrepl.token(app))
            wait_until(lambda w=want: leader.status()["seq"] >= w, "the leader to see it", 1.0)
    finally:
        app.close()


class SyncWriter(Background):
    """An app committing one row per transaction through sqlrepl.connect(acks=1): keeps
    every value whose commit() returned (acknowledged by a follower)."""

    every = 0.0

    def __init__(self, db: Path, leader: str) -> None:
        super().__init__()
        self.conn = sqlrepl.connect(db, leader, acks=1, timeout=2, check_same_thread=False)
        self.acked: list[str] = []
        self.failed = 0

    def step(self) -> None:
        value = f"s{len(self.acked) + self.failed}"
        try:
            self.conn.execute("INSERT INTO t(v) VALUES(?)", (value,))
            self.conn.commit()
            self.acked.append(value)
        except (sqlite3.Error, sqlrepl.SqlreplError):
            self.failed += 1
            time.sleep(0.05)


def test_acknowledged_writes_survive_the_loss_of_the_leader(
    tmp_path: Path, cluster: Cluster, etcd: EtcdServer
) -> None:
    """Two followers, one frozen for the last writes (behind, but alive and a candidate):
    kill -9 of the leader while an app commits with acks=1. Every acknowledged commit is
    on the new leader: the election never picks the follower behind an acknowledged
    token."""
    coord = ["--coordinator", etcd.coordinator(), "--ttl", "4"]
    db = app_db(tmp_path / "n0.db")
    leader = cluster.leader(db, *coord)
    wait_until(lambda: leader.status().get("gate") == "open", "the leader to take the lease")
    near = cluster.follower(tmp_path / "n1.db", leader, *coord)
    far = cluster.follower(tmp_path / "n2.db", leader, *coord)
    assert far.proc is not None
    writer = SyncWriter(db, leader.url)
    with writer:
        wait_until(lambda: len(writer.acked) > 200, "acknowledged writes")
        os.kill(far.proc.pid, signal.SIGSTOP)  # far falls behind, alive and a candidate
        try:
            ahead = len(writer.acked) + 50
            wait_until(lambda: len(writer.acked) > ahead, "writes only near acknowledged")
            leader.kill9()
        finally:
            os.kill(far.proc.pid, signal.SIGCONT)
    acked = set(writer.acked)
    lag = len(acked - values(tmp_path / "n2.db"))
    pair = [near, far]
    new = wait_open_leader(pair, "a new leader", 20)
    files = {near.name: tmp_path / "n1.db", far.name: tmp_path / "n2.db"}
    assert new is not None
    missing = acked - values(files[new.name])
    assert not missing, (
        f"{len(missing)} acknowledged writes lost on {new.name} (the far follower lacked "
        f"{lag}): {sorted(missing)[:5]}"
    )
    assert lag > 0, "the far follower was not behind: nothing was tested"


def test_an_archive_never_votes_for_majority(tmp_path: Path, cluster: Cluster) -> None:
    """`acks=majority` counts the followers that vote: with one follower and an archive it
    returns once the follower holds the token; with two followers and an archive it needs
    one of the two. The leader's status marks the archive as no voter."""
    db = app_db(tmp_path / "a.db")
    leader = cluster.leader(db)
    b = cluster.follower(tmp_path / "b.db", leader)
    archive = cluster.archive(tmp_path / "archive", leader)
    insert(db, "one")
    token = token_of(db)
    wait_until(lambda: archive.status()["seq"] >= seq_of(token), "the archive to hold it")
    assert sqlrepl.wait(token, leader.url, acks="majority", timeout=20) == 1
    voters = {f["url"]: f["voter"] for f in leader.status()["followers"]}
    assert voters == {b.url: True, archive.url: False}
    c = cluster.follower(tmp_path / "c.db", leader)
    b.stop()  # 2 voters known: with the leader 3 nodes, a majority needs 1 of the 2
    insert(db, "two")
    token = token_of(db)
    assert sqlrepl.wait(token, leader.url, acks="majority", timeout=20) == 1
    c.stop()  # neither voter answers: the archive does not count
    insert(db, "three")
    token = token_of(db)
    wait_until(lambda: archive.status()["seq"] >= seq_of(token), "the archive to hold it")
    with pytest.raises(sqlrepl.NotAcknowledged, match="0 of the 1 acknowledgement"):
        sqlrepl.wait(token, leader.url, acks="majority", timeout=2)
    b.start()
    assert sqlrepl.wait(token, leader.url, acks="majority", timeout=20) == 1


def test_a_commit_not_acknowledged_says_so_with_its_token(
    tmp_path: Path, trio: tuple[Path, Daemon, Daemon, Daemon]
) -> None:
    """A commit whose acknowledgements cannot be counted (asked of a follower, which does
    not count them) is made, and raises NotAcknowledged with its token, never a
    configuration error; a bad `acks` is refused before any commit."""
    db, _leader, b, _c = trio
    with pytest.raises(sqlrepl.ConfigError):
        sqlrepl.connect(db, b.url, acks="most")
    app = sqlrepl.connect(db, b.url, acks=1, timeout=1)
    app.execute("INSERT INTO t(v) VALUES('made')")
    with pytest.raises(sqlrepl.NotAcknowledged) as caught:
        app.commit()
    app.close()
    assert caught.value.token == token_of(db) and "made" in values(db)


def test_a_sync_commit_on_a_node_just_promoted_waits_on_the_new_leader(
    tmp_path: Path, trio: tuple[Path, Daemon, Daemon, Daemon]
) -> None:
    """An app on b's host commits with acks=1 right after b was promoted: its commit is
    acknowledged by the new leader's followers (5 promotions in a row)."""
    db, leader, b, c = trio
    files = {leader.url: db, b.url: tmp_path / "b.db", c.url: tmp_path / "c.db"}
    nodes = [leader, b, c]
    for round_ in range(5):
        target = nodes[(round_ + 1) % 3]
        promoted = run("promote", target.url, "--force", timeout=60)
        assert promoted.returncode == 0, promoted.stderr
        wait_until(lambda t=target: accepts_writes(files[t.url]), "the new leader's gate")
        app = sqlrepl.connect(files[target.url], target.url, acks=1, timeout=30)
        app.execute("INSERT INTO t(v) VALUES(?)", (f"promoted-{round_}",))
        app.commit()  # NotAcknowledged or a ConfigError here fails the test
        app.close()
