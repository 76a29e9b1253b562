"""Elections and healing under partitions, slow links and frozen processes (real etcd,
real daemons, a TCP proxy of our own between them). Every check is made from outside:
app writes attempted on the files, status read over HTTP."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

from ..helpers.apps import TTL, app_db, values, wait_open_leader
from ..helpers.daemons import Cluster, Daemon, insert, wait_until
from ..helpers.etcd import EtcdServer
from ..helpers.proxy import Proxy


def bulk(db: Path, prefix: str, n: int) -> set[str]:
    """One app transaction of `n` inserts; the values it committed."""
    rows = {f"{prefix}-{i}" for i in range(n)}
    conn = sqlite3.connect(db, timeout=10)
    with conn:
        conn.executemany("INSERT INTO t(v) VALUES(?)", [(v,) for v in sorted(rows)])
    conn.close()
    return rows


def test_a_stale_follower_knows_it_and_the_freshest_wins(
    tmp_path: Path, cluster: Cluster, etcd: EtcdServer
) -> None:
    """A follower frozen while its leader ran 1,500 changes ahead, then resumed after the
    leader died, reports its real lag (from the head the leader published in etcd) and is
    not eligible; the other follower, which answers status only slowly, still wins, and
    has every change."""
    coord = ["--coordinator", etcd.coordinator(), "--ttl", str(TTL), "--max-lag", "1000"]
    a_db, b_db, c_db = app_db(tmp_path / "a.db"), tmp_path / "b.db", tmp_path / "c.db"
    a = cluster.leader(a_db, *coord[:4])
    wait_until(lambda: a.status().get("gate") == "open", "the leader to take the lease")
    b = cluster.follower(b_db, a, *coord)
    with Proxy(0) as slow:
        c = _follower_behind(cluster, c_db, a, coord, slow)
        bulk(a_db, "before", 10)
        cluster.wait_caught_up(a_db, b, c)
        assert b.proc is not None
        os.kill(b.proc.pid, signal.SIGSTOP)
        try:
            # The stopped follower's long poll is answered with this one row (it lands in
            # its socket buffer); nothing of what follows reaches it.
            bulk(a_db, "bait", 1)
            wait_until(lambda: _unread_bytes(a.port) > 0, "the answer to the stopped poll")
            ahead = bulk(a_db, "ahead", 1500)
            cluster.wait_caught_up(a_db, c)
            wait_until(
                lambda: int((etcd.get("/sqlrepl/test/head") or {}).get("seq", 0)) >= 1500,
                "the leader to publish its head",
            )
        finally:
            a.kill9()
            os.kill(b.proc.pid, signal.SIGCONT)
        wait_until(lambda: b.status()["lag"]["changes"] >= 1500, "the stale follower's lag")
        assert b.status()["eligible"] is False
        assert "lagging" in str(b.status()["why_not"])
        slow.delay(1.5)  # c answers status slower than a candidate used to wait
        assert wait_open_leader([b, c], "a new leader", TTL + 20) is c
        assert ahead <= values(c_db)
        assert "won the election" not in b.log()


def _follower_behind(
    cluster: Cluster, db: Path, leader: Daemon, coord: list[str], proxy: Proxy
) -> Daemon:
    """A follower that others reach only through `proxy` (its advertised URL)."""
    from ..helpers.daemons import free_port

    port = free_port()
    proxy.target = ("127.0.0.1", port)
    return cluster.follower(db, leader, *coord, "--advertise", proxy.url, port=port)


def _unread_bytes(port: int) -> int:
    """Bytes waiting unread in sockets connected to `port` (a stopped process's)."""
    out = subprocess.run(
        ["ss", "-tnH", "state", "established", "dst", f"127.0.0.1:{port}"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return sum(int(line.split()[0]) for line in out.splitlines() if line.split())


def test_lag_counts_the_published_head_of_this_epoch_or_later() -> None:
    """A follower's lag is measured against the newest head it knows from its leader or
    from the coordinator; a head published on an older epoch does not count."""
    from sqlrepl.core.positions import Position
    from sqlrepl.node.follower.progress import Progress

    p = Progress(position=Position(3, 100))
    p.saw_leader(100)
    assert p.lag() == 0
    p.saw_published({"epoch": 3, "seq": 1600})
    assert (p.known_head, p.lag()) == (1600, 1500)
    p.saw_published({"epoch": 2, "seq": 5000})
    assert p.lag() == 0
    p.saw_published({"epoch": 4, "seq": 130})
    assert p.lag() == 30


def test_a_dead_link_is_noticed_and_healing_is_quick(tmp_path: Path, cluster: Cluster) -> None:
    """A link that silently stops carrying packets (no reset) is noticed by the follower
    within its poll wait and a grace, shown in status, and left for a new connection: once
    the link carries packets again, the follower catches up at once."""
    from ..helpers.daemons import free_port

    db = app_db(tmp_path / "a.db")
    port = free_port()
    with Proxy(port) as link:
        cluster.leader(db, "--advertise", link.url, port=port)
        b = cluster.follower(tmp_path / "b.db", link.url)
        bulk(db, "before", 10)
        cluster.wait_caught_up(db, b)
        link.blackhole()
        behind = bulk(db, "during", 200)
        wait_until(lambda: b.status().get("error") is not None, "the dead link noticed", 15)
        assert b.status()["lag"]["seconds"] > 0
        link.heal()
        cluster.wait_caught_up(db, b, deadline=15)
        assert behind <= values(tmp_path / "b.db")


def test_losing_etcds_own_raft_leader_fails_nothing_over(tmp_path: Path, cluster: Cluster) -> None:
    """etcd loses its raft leader twice (kill -9 of that member, then SIGSTOP of the next
    one, whose requests then hang instead of failing; etcd elects another leader in
    about 2 s with its default election timeout): the sqlrepl leader keeps its lease and
    epoch, and app writes on it never fail. The TTL must leave room for that election
    (docs/failover.md says which); 8 s does."""
    from ..helpers.daemons import Writer
    from ..helpers.etcd import EtcdCluster

    etcds = EtcdCluster(tmp_path).start()
    try:
        ttl = 8
        coord = ["--coordinator", etcds.coordinator(), "--ttl", str(ttl)]
        files = [app_db(tmp_path / "n0.db"), tmp_path / "n1.db", tmp_path / "n2.db"]
        leader = cluster.leader(files[0], *coord)
        wait_until(lambda: leader.status().get("gate") == "open", "the leader to take the lease")
        for f in files[1:]:
            cluster.follower(f, leader, *coord)
        epoch = leader.status()["epoch"]
        with Writer(files[0]) as writer:
            for fault in (signal.SIGKILL, signal.SIGSTOP):
                wait_until(lambda: etcds.raft_leader() is not None, "etcd's raft leader")
                victim = etcds.raft_leader()
                assert victim is not None and victim.proc is not None
                os.kill(victim.proc.pid, fault)
                gone = victim
                wait_until(
                    lambda: etcds.raft_leader() not in (None, gone),  # noqa: B023
                    "etcd to elect a leader",
                )
                # A TTL of app writes after etcd's election: a lapsed lease would show.
                end = time.monotonic() + ttl
                wait_until(lambda: time.monotonic() > end, "a TTL", 2 * ttl)  # noqa: B023
                if fault == signal.SIGSTOP:
                    os.kill(victim.proc.pid, signal.SIGCONT)
                else:
                    victim.proc.wait()
                    victim.start(wait=True)
        assert (leader.status()["epoch"], leader.status()["gate"]) == (epoch, "open")
        assert "stepped down" not in leader.log()
        assert writer.refused == [], writer.refused[:3]
        assert len(writer.acked) > 100
    finally:
        etcds.stop()


def test_an_app_holding_the_write_lock_across_a_lease_loss(
    tmp_path: Path, cluster: Cluster, etcd: EtcdServer
) -> None:
    """An app holds the leader's write lock (an insert not yet committed) while the leader
    is cut off from etcd, past its step-down point and past another node's election, and
    a second app waits for that lock. The held commit still succeeds (SQLite lets nobody
    veto another process's commit; docs/failover.md states this bound), and the waiting write
    may too; then the gate closes and nothing more commits there; both writes, if they
    committed, are in the rollback file when the old leader rejoins."""
    from ..helpers.apps import unaccounted
    from ..helpers.daemons import WriteSampler

    with Proxy(etcd.client_port) as link:
        to_etcd = f"etcd://127.0.0.1:{link.port}/test"
        files = [app_db(tmp_path / "n0.db"), tmp_path / "n1.db", tmp_path / "n2.db"]
        ttl = ["--ttl", str(TTL)]
        leader = cluster.leader(files[0], "--coordinator", to_etcd, *ttl)
        wait_until(lambda: leader.status().get("gate") == "open", "the leader to take the lease")
        coord = ["--coordinator", etcd.coordinator(), *ttl]
        nodes = [leader] + [cluster.follower(f, leader, *coord) for f in files[1:]]
        for node in nodes[1:]:
            wait_until(lambda n=node: n.status().get("state") == "streaming", "followers")
        app = sqlite3.connect(files[0], timeout=30, isolation_level=None)
        app.execute("BEGIN")
        app.execute("INSERT INTO t(v) VALUES('held')")
        acked = {"held"}
        link.cut()
        new = wait_open_leader(nodes[1:], "a new leader", TTL + 20)

        def waiting() -> None:
            try:
                insert(files[0], "waiting", timeout=30)
                acked.add("waiting")
            except sqlite3.DatabaseError:
                pass

        second = threading.Thread(target=waiting)
        second.start()
        app.execute("COMMIT")  # succeeds: nothing can veto another process's commit
        app.close()
        second.join()
        wait_until(lambda: leader.status().get("gate") == "closed", "the gate closed")
        with WriteSampler(nodes, files) as sampler:  # from now on, one node takes writes
            wait_until(lambda: len(sampler.acked) > 5, "writes on the new leader")
            link.heal()
            wait_until(lambda: leader.role() == "follower", "the old leader to rejoin", 40)
            wait_until(lambda: leader.status().get("rollback") is not None, "its rollback file")
        final = files[nodes.index(new)]
    assert unaccounted({*sampler.acked, *acked}, final, tmp_path) == set()
