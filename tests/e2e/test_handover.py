"""Role changes as operators make them: a graceful stop hands over, the rest of the
cluster follows by itself, a restarted old leader rejoins, epochs are never reused."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
import urllib.error
from pathlib import Path

from ..helpers.apps import (
    TTL,
    accepts_writes,
    app_db,
    open_leader,
    rollbacks,
    run_cli,
    unaccounted,
    values,
    wait_open_leader,
)
from ..helpers.daemons import (
    Cluster,
    Daemon,
    Sampler,
    Writer,
    WriteSampler,
    insert,
    sqlrepl,
    wait_until,
)
from ..helpers.dump import dump
from ..helpers.etcd import EtcdServer


def sigterm(node: Daemon) -> float:
    assert node.proc is not None
    node.proc.send_signal(signal.SIGTERM)
    return time.monotonic()


def follows(node: Daemon, leader: Daemon) -> bool:
    try:
        s = node.status()
    except (OSError, urllib.error.URLError):
        return False  # between two roles: a request that arrived then may be cut
    return s.get("role") == "follower" and s.get("leader") == leader.url


def test_sigterm_of_a_static_leader_hands_over_and_the_cluster_follows(
    tmp_path: Path, cluster: Cluster
) -> None:
    """SIGTERM under write load: the most up-to-date follower leads within moments, every
    acknowledged write is on it, the other follower follows it by itself, and the old
    leader restarted with its unchanged command rejoins as a follower."""
    db = app_db(tmp_path / "a.db")
    leader = cluster.leader(db)
    files = [db, tmp_path / "b.db", tmp_path / "c.db"]
    b, c = (cluster.follower(f, leader) for f in files[1:])
    nodes = [leader, b, c]
    with Sampler(nodes), WriteSampler(nodes, files) as probes, Writer(db) as writer:
        wait_until(lambda: len(writer.acked) > 50, "writes before the stop")
        sigterm(leader)
        wait_until(lambda: open_leader([b, c]) is not None, "a new leader", 10)
        assert leader.proc is not None and leader.proc.wait(10) == 0
    new = wait_open_leader([b, c], "the new leader")
    other = c if new is b else b
    new_db = files[[leader, b, c].index(new)]
    assert set(writer.acked) | set(probes.acked) <= values(new_db)
    wait_until(lambda: follows(other, new), "the other follower to follow the new leader", 15)
    leader.start()
    wait_until(lambda: follows(leader, new), "the old leader to rejoin as a follower")
    insert(new_db, "after the handover")
    cluster.wait_caught_up(new_db, leader, other)
    assert dump(db) == dump(new_db) == dump(files[[leader, b, c].index(other)])
    assert rollbacks(tmp_path) == []


def test_graceful_stop_of_the_etcd_leader_ten_times(
    tmp_path: Path, cluster: Cluster, etcd: EtcdServer
) -> None:
    """Ten planned restarts of whichever node leads, under write load: each hands over
    (writes accepted elsewhere at once), loses no acknowledged write, and the stopped node
    comes back with its unchanged command as a follower."""
    coord = ["--coordinator", etcd.coordinator(), "--ttl", str(TTL)]
    files = [app_db(tmp_path / "n0.db"), tmp_path / "n1.db", tmp_path / "n2.db"]
    first = cluster.leader(files[0], *coord)
    wait_until(lambda: first.status().get("gate") == "open", "the first lease")
    nodes = [first, *(cluster.follower(f, first, *coord) for f in files[1:])]
    acked: set[str] = set()
    took = []
    with Sampler(nodes), WriteSampler(nodes, files) as probes:
        for round_ in range(10):
            current = wait_open_leader(nodes, "the leader")
            db = files[nodes.index(current)]
            others = [n for n in nodes if n is not current]
            cluster.wait_caught_up(db, *others)
            with Writer(db) as writer:
                wait_until(lambda: len(writer.acked) > 20, "writes before the stop")  # noqa: B023
                stopped = sigterm(current)
                wait_until(
                    lambda: any(accepts_writes(files[nodes.index(n)]) for n in others),  # noqa: B023
                    f"writes accepted elsewhere (round {round_})",
                    TTL + 10,
                )
                took.append(time.monotonic() - stopped)
            acked |= set(writer.acked)
            assert current.proc is not None and current.proc.wait(10) == 0
            current.start()
            wait_until(lambda: current.role() == "follower", "the stopped node to follow")  # noqa: B023
    final = wait_open_leader(nodes, "the final leader")
    final_db = files[nodes.index(final)]
    assert acked | set(probes.acked) <= values(final_db)
    insert(final_db, "the end")
    cluster.wait_caught_up(final_db, *(n for n in nodes if n is not final))
    for f in files:
        assert dump(f) == dump(final_db), (f, values(final_db) ^ values(f))
    assert rollbacks(tmp_path) == []
    print("graceful stop -> writes accepted elsewhere, s:", " ".join(f"{t:.2f}" for t in took))


def test_after_promote_and_switchover_every_follower_follows_by_itself(
    tmp_path: Path, cluster: Cluster
) -> None:
    """Static mode: after a promote (old leader dead) and after a switchover, the other
    followers follow the new leader without a restart; a restarted deposed leader whose
    file still says it leads rejoins instead of leading again."""
    db = app_db(tmp_path / "a.db")
    leader = cluster.leader(db)
    files = [db, tmp_path / "b.db", tmp_path / "c.db"]
    b, c = (cluster.follower(f, leader) for f in files[1:])
    insert(db, "one")
    cluster.wait_caught_up(db, b, c)
    with Sampler([leader, b, c]), WriteSampler([leader, b, c], files) as probes:
        leader.kill9()
        assert run_cli("promote", b.url)["epoch"] == 2
        wait_until(lambda: follows(c, b), "c to follow the promoted b", 15)
        insert(files[1], "two")
        cluster.wait_caught_up(files[1], c)
        leader.start()  # its file still says leader of epoch 1: it must rejoin, not lead
        wait_until(lambda: follows(leader, b), "the deposed leader to rejoin", 15)
        assert not accepts_writes(db)
        result = run_cli("switchover", "--to", c.url)
        assert result["epoch"] == 3
        wait_until(lambda: follows(leader, c) and follows(b, c), "all to follow c", 15)
    insert(files[2], "three")
    cluster.wait_caught_up(files[2], leader, b)
    assert dump(db) == dump(files[1]) == dump(files[2])
    assert {"one", "two", "three"} <= values(files[2])
    assert unaccounted(set(probes.acked), files[2], tmp_path) == set()


def test_promoting_a_stranded_follower_never_forks_silently(
    tmp_path: Path, cluster: Cluster
) -> None:
    """A follower that missed a switchover and cannot reach the new leader is not promoted
    without a majority of the members it knows; forced, it may repeat the epoch number,
    but a follower of the other timeline re-pointed at it reports the fork and keeps its
    content aside — never 'streaming' on different data."""
    db = app_db(tmp_path / "a.db")
    leader = cluster.leader(db)
    f1, f2 = tmp_path / "b.db", tmp_path / "c.db"
    b = cluster.follower(f1, leader)
    c = cluster.follower(f2, leader)
    insert(db, "shared")
    cluster.wait_caught_up(db, b, c)
    known = f2.with_name(f2.name + ".sqlrepl-members")
    wait_until(lambda: known.exists() and b.url in json.loads(known.read_text()), "c to know b")
    c.stop()
    assert run_cli("switchover", "--to", b.url)["epoch"] == 2
    insert(f1, "only on the new timeline")
    cluster.wait_caught_up(f1, leader)
    assert b.proc is not None
    os.kill(b.proc.pid, signal.SIGSTOP)  # unreachable, not gone
    try:
        leader.kill9()
        c.start()
        plain = sqlrepl("promote", c.url)
        assert plain.returncode == 1 and "no majority" in plain.stderr, plain.stderr
        forced = run_cli("promote", c.url, "--force")
        insert(f2, "only on the forced timeline")
    finally:
        os.kill(b.proc.pid, signal.SIGCONT)
    repointed = cluster.follower(db, c, port=leader.port)
    wait_until(lambda: repointed.status().get("rollback") is not None, "the fork reported")
    cluster.wait_caught_up(f2, repointed)
    assert dump(db) == dump(f2)
    assert "only on the new timeline" in values(Path(repointed.status()["rollback"]))
    assert "forked" in repointed.log() or "diverged" in repointed.log()
    print(f"forced epoch {forced['epoch']}; the other timeline's epoch 2")


def test_a_restarted_leader_with_no_newer_leader_leads_again(
    tmp_path: Path, cluster: Cluster
) -> None:
    """A leader restarted on its file while no newer leader exists leads again as before."""
    db = app_db(tmp_path / "a.db")
    leader = cluster.leader(db)
    b = cluster.follower(tmp_path / "b.db", leader)
    insert(db, "x")
    cluster.wait_caught_up(db, b)
    leader.kill9()
    leader.start()
    assert leader.status()["role"] == "leader" and leader.status()["gate"] == "open"
    insert(db, "y")
    cluster.wait_caught_up(db, b)
    conn = sqlite3.connect(f"file:{tmp_path / 'b.db'}?mode=ro", uri=True)
    assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 2
    conn.close()


def test_a_leader_restarted_as_a_follower_of_its_own_follower_leads_again(
    tmp_path: Path, cluster: Cluster
) -> None:
    """After a switchover the new leader is killed; restarted with its original command
    (`follower --leader OLD`) while OLD follows it, it leads again instead of waiting
    forever for a leader that will never come; nothing acknowledged is lost."""
    a_db = app_db(tmp_path / "a.db")
    a = cluster.leader(a_db)
    b = cluster.follower(tmp_path / "b.db", a)
    insert(a_db, "before")
    cluster.wait_caught_up(a_db, b)
    assert run_cli("switchover", "--to", b.url)["leader"] == b.url
    wait_until(lambda: follows(a, b), "the old leader to follow the new one")
    insert(tmp_path / "b.db", "on the new leader")
    cluster.wait_caught_up(tmp_path / "b.db", a)
    b.kill9()
    b.start()  # the same command: follower --leader A, and A follows B
    wait_until(lambda: b.role() == "leader" and b.status()["gate"] == "open", "b to lead again")
    insert(tmp_path / "b.db", "after the restart")
    cluster.wait_caught_up(tmp_path / "b.db", a)
    assert {"before", "on the new leader", "after the restart"} <= values(a_db)
    assert "leading again" in b.log()
