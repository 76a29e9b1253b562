"""End to end: real leader and follower daemons, real HTTP on loopback, real files."""

from __future__ import annotations

import random
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from ..helpers.apps import make_db
from ..helpers.daemons import Cluster, Writer, wait_until
from ..helpers.dump import applied_seq, dump, log_head

ACCOUNTS = 20
START = 1000


def test_replicates_and_readers_see_it(tmp_path: Path, cluster: Cluster) -> None:
    """Writes from an app on the leader reach a follower that apps read read-only."""
    db = make_db(tmp_path / "app.db", "CREATE TABLE t(id INTEGER PRIMARY KEY, v)")
    leader = cluster.leader(db)
    follower = cluster.follower(tmp_path / "replica.db", leader)
    app = sqlite3.connect(db)
    app.executemany("INSERT INTO t(v) VALUES(?)", [(i,) for i in range(500)])
    app.commit()
    reader = sqlite3.connect(f"file:{tmp_path / 'replica.db'}?mode=ro", uri=True)
    cluster.wait_caught_up(db, follower)
    assert reader.execute("SELECT count(*) FROM t").fetchone() == (500,)
    assert dump(db) == dump(tmp_path / "replica.db")
    status = follower.status()
    assert status["role"] == "follower" and status["lag"]["changes"] == 0


TRANSFERS = """
import random, sqlite3, sys
conn = sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None)
for i in range(int(sys.argv[2])):
    a, b = random.sample(range(ACCOUNTS), 2)
    amount = random.randint(1, 50)
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("UPDATE accounts SET balance = balance - ? WHERE id = ?", (amount, a))
    conn.execute("UPDATE accounts SET balance = balance + ? WHERE id = ?", (amount, b))
    conn.execute("COMMIT")
""".replace("ACCOUNTS", str(ACCOUNTS))


def test_reader_never_sees_part_of_a_transaction(tmp_path: Path, cluster: Cluster) -> None:
    """Transfers between accounts keep the total constant for a concurrent follower reader."""
    db = make_db(
        tmp_path / "bank.db", "CREATE TABLE accounts(id INTEGER PRIMARY KEY, balance INTEGER)"
    )
    app = sqlite3.connect(db)
    app.executemany("INSERT INTO accounts VALUES(?, ?)", [(i, START) for i in range(ACCOUNTS)])
    app.commit()
    leader = cluster.leader(db)
    follower = cluster.follower(tmp_path / "replica.db", leader)
    writers = [
        subprocess.Popen([sys.executable, "-c", TRANSFERS, str(db), "400"]) for _ in range(3)
    ]
    totals: set[int] = set()
    reads = 0
    reader = sqlite3.connect(f"file:{tmp_path / 'replica.db'}?mode=ro", uri=True)
    try:
        while any(w.poll() is None for w in writers) or reads < 50:
            totals.add(reader.execute("SELECT sum(balance) FROM accounts").fetchone()[0])
            reads += 1
    finally:
        for w in writers:
            w.wait(60)
    assert all(w.returncode == 0 for w in writers)
    cluster.wait_caught_up(db, follower)
    assert totals == {ACCOUNTS * START}
    assert dump(db) == dump(tmp_path / "replica.db")


INSERTS = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], timeout=30)
for i in range(200):
    conn.execute("INSERT INTO events(writer, n, payload) VALUES(?, ?, randomblob(64))",
                 (sys.argv[2], i))
    conn.commit()
"""


def test_concurrent_writer_processes_all_replicate(tmp_path: Path, cluster: Cluster) -> None:
    """Several app processes writing at once all replicate, every row once."""
    db = make_db(
        tmp_path / "ev.db", "CREATE TABLE events(id INTEGER PRIMARY KEY, writer, n, payload)"
    )
    leader = cluster.leader(db)
    followers = [cluster.follower(tmp_path / f"r{i}.db", leader) for i in range(2)]
    procs = [subprocess.Popen([sys.executable, "-c", INSERTS, str(db), str(w)]) for w in range(4)]
    assert all(p.wait(120) == 0 for p in procs)
    cluster.wait_caught_up(db, *followers)
    for i in range(2):
        assert dump(db) == dump(tmp_path / f"r{i}.db")
    assert len(dump(db)["events"]) == 800


def test_writes_while_leader_daemon_is_down_are_captured(tmp_path: Path, cluster: Cluster) -> None:
    """Apps writing while the leader daemon is stopped lose nothing."""
    db = make_db(tmp_path / "app.db", "CREATE TABLE t(id INTEGER PRIMARY KEY, v)")
    leader = cluster.leader(db)
    follower = cluster.follower(tmp_path / "replica.db", leader)
    leader.kill9()  # a crashed daemon (SIGTERM would hand over to the follower)
    app = sqlite3.connect(db)
    app.executemany("INSERT INTO t(v) VALUES(?)", [(i,) for i in range(100)])
    app.execute("CREATE TABLE later(x)")
    app.execute("INSERT INTO later VALUES('written before capture existed')")
    app.commit()
    leader.start()
    cluster.wait_caught_up(db, follower)
    assert dump(db) == dump(tmp_path / "replica.db")


def test_kill9_follower_during_catchup_converges(tmp_path: Path, cluster: Cluster) -> None:
    """kill -9 of the follower mid catch-up, again and again: nothing lost, nothing twice."""
    db = make_db(tmp_path / "big.db", "CREATE TABLE t(id INTEGER PRIMARY KEY, v, u UNIQUE)")
    leader = cluster.leader(db)
    replica = tmp_path / "replica.db"
    follower = cluster.follower(replica, leader)
    follower.stop()
    app = sqlite3.connect(db)
    rnd = random.Random(7)
    interrupted = 0
    for round_ in range(3):
        app.executemany(
            "INSERT OR REPLACE INTO t(id, v, u) VALUES(?, randomblob(200), ?)",
            [(rnd.randrange(300_000), rnd.randrange(10**9)) for _ in range(50_000)],
        )
        app.execute("DELETE FROM t WHERE id % 17 = ?", (round_,))
        app.commit()
        starts = follower.log().count("following")
        follower.start(ready=False)
        wait_until(
            lambda: follower.log().count("following") > starts,  # noqa: B023 (called at once)
            "follower to open its file",
        )
        time.sleep(rnd.uniform(0, 0.5))  # a random instant to kill at, not a wait for replication
        follower.kill9()
        interrupted += applied_seq(replica) < log_head(db)
    assert interrupted > 0, "no kill landed during a catch-up"
    follower.start()
    cluster.wait_caught_up(db, follower, deadline=60)
    assert dump(db) == dump(replica)


def test_kill9_leader_during_writes_converges(tmp_path: Path, cluster: Cluster) -> None:
    """kill -9 of the leader daemon while apps write, repeatedly: the follower converges."""
    db = make_db(tmp_path / "app.db", "CREATE TABLE t(id INTEGER PRIMARY KEY, v)")
    leader = cluster.leader(db)
    follower = cluster.follower(tmp_path / "replica.db", leader)
    with Writer(db) as writer:  # an app writing all along, 2 ms between commits
        for _ in range(4):
            start = log_head(db)
            wait_until(
                lambda: (follower.status()["seq"] or 0) > start,  # noqa: B023 (called at once)
                "follower to apply new writes",
            )
            leader.kill9()
            leader.start()
    assert not writer.refused and writer.acked
    cluster.wait_caught_up(db, follower)
    assert dump(db) == dump(tmp_path / "replica.db")


def test_follower_behind_trimmed_log_rebootstraps(tmp_path: Path, cluster: Cluster) -> None:
    """A follower that fell behind the trimmed log is re-bootstrapped and converges."""
    db = make_db(tmp_path / "app.db", "CREATE TABLE t(id INTEGER PRIMARY KEY, v)")
    leader = cluster.leader(db, "--log-limit", "1")
    replica = tmp_path / "replica.db"
    follower = cluster.follower(replica, leader)
    follower.stop()
    app = sqlite3.connect(db)
    for i in range(50):
        app.execute("INSERT INTO t(v) VALUES(?)", (i,))
        app.commit()

    def trimmed() -> bool:
        conn = sqlite3.connect(db)
        try:
            return conn.execute("SELECT count(*) FROM _sqlrepl_log").fetchone()[0] == 1
        finally:
            conn.close()

    assert trimmed(), "the log bounds itself as the app writes"
    reader = sqlite3.connect(f"file:{replica}?mode=ro", uri=True)
    assert reader.execute("SELECT count(*) FROM t").fetchone() == (0,)
    follower.start()
    cluster.wait_caught_up(db, follower)
    assert "re-bootstrapping" in follower.log()
    assert reader.execute("SELECT count(*) FROM t").fetchone() == (50,)
    assert dump(db) == dump(replica)
