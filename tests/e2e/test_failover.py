"""Promotion and handover with static coordination: epochs, the write gate, switchover,
refusals, divergence (real daemons on loopback)."""

from __future__ import annotations

import base64
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..helpers.apps import app_db, run_cli, values
from ..helpers.daemons import (
    Cluster,
    Daemon,
    Sampler,
    Writer,
    free_port,
    insert,
    sqlrepl,
    wait_until,
)
from ..helpers.dump import dump, log_head


@pytest.fixture
def trio(tmp_path: Path, cluster: Cluster) -> Iterator[tuple[Path, Daemon, Path, Daemon]]:
    db = app_db(tmp_path / "a.db")
    leader = cluster.leader(db)
    b = tmp_path / "b.db"
    follower = cluster.follower(b, leader)
    yield db, leader, b, follower


def said(result) -> str:
    return " ".join(result.stderr.split())


def test_switchover_under_write_load_loses_nothing(
    trio: tuple[Path, Daemon, Path, Daemon], cluster: Cluster
) -> None:
    """Planned handover while an app writes: every acknowledged write is on the new leader,
    apps are refused only briefly, and the old leader rejoins without a snapshot."""
    db, leader, b, follower = trio
    snapshots_before = leader.log().count("downloading a snapshot")
    with Sampler([leader, follower]), Writer(db) as writer:
        wait_until(lambda: len(writer.acked) > 50, "writes before the switchover")
        result = run_cli("switchover", "--to", follower.url)
        assert result["leader"] == follower.url and result["epoch"] == 2
        assert result["unavailable_s"] < 2
        print(f"switchover: writes refused for {result['unavailable_s']}s")
        wait_until(lambda: bool(writer.refused), "the old leader to refuse a write")
        assert "writes refused" in writer.refused[0]
    with Writer(b) as writer2:
        wait_until(lambda: len(writer2.acked) > 20, "writes on the new leader")
    assert set(writer.acked) <= values(b)
    wait_until(lambda: leader.role() == "follower", "old leader to follow")
    cluster.wait_caught_up(b, leader)
    assert dump(db) == dump(b)
    assert leader.log().count("downloading a snapshot") == snapshots_before
    assert follower.status()["history"][-1]["epoch"] == 2
    hist = run_cli("history", leader.url)
    assert [h["epoch"] for h in hist] == [2] and hist[0]["start_seq"] > 0


def test_promote_fences_a_live_old_leader(
    trio: tuple[Path, Daemon, Path, Daemon], cluster: Cluster
) -> None:
    """Promote while the old leader still runs: it closes its gate and follows the new one."""
    db, leader, b, follower = trio
    insert(db, "before")
    cluster.wait_caught_up(db, follower)
    with Sampler([leader, follower]):
        result = run_cli("promote", follower.url)
        assert result["epoch"] == 2
        wait_until(lambda: leader.role() == "follower", "old leader to rejoin")
    with pytest.raises(sqlite3.DatabaseError, match="read-only follower|writes refused"):
        insert(db, "after, on the old leader")
    insert(b, "after, on the new leader")
    cluster.wait_caught_up(b, leader)
    assert dump(db) == dump(b)
    assert "after, on the new leader" in values(db)


def test_promote_and_switchover_refusals(
    trio: tuple[Path, Daemon, Path, Daemon], cluster: Cluster, tmp_path: Path
) -> None:
    """Lagging, unknown and non-candidate targets are refused with the reason, unless --force."""
    db, leader, b, follower = trio
    shy = cluster.follower(tmp_path / "c.db", leader, "--no-candidate")
    for cmd in (["promote", shy.url], ["switchover", "--to", shy.url]):
        result = sqlrepl(*cmd)
        assert result.returncode == 1 and "not a candidate" in said(result), result.stderr
    unknown = f"http://127.0.0.1:{free_port()}"
    for cmd in (["promote", unknown], ["switchover", "--to", unknown]):
        result = sqlrepl(*cmd)
        assert result.returncode == 1 and "unreachable" in said(result), result.stderr
    lock = sqlite3.connect(b, isolation_level=None, timeout=1)
    lock.execute("BEGIN IMMEDIATE")  # the follower can't apply: it lags while it knows the head
    try:
        app = sqlite3.connect(db)
        app.executemany("INSERT INTO t(v) VALUES(?)", [("bulk",)] * 10_001)
        app.commit()
        app.close()
        wait_until(lambda: follower.status()["lag"]["changes"] > 10_000, "a lag past 10,000")
        assert not follower.status()["eligible"]
        for cmd in (["promote", follower.url], ["switchover", "--to", follower.url]):
            result = sqlrepl(*cmd)
            assert result.returncode == 1 and "lagging" in said(result), result.stderr
        assert leader.status()["gate"] == "open"
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    cluster.wait_caught_up(db, follower)
    assert run_cli("promote", shy.url, "--force")["epoch"] == 2


def test_deposed_leader_with_divergent_writes_rejoins(
    trio: tuple[Path, Daemon, Path, Daemon], cluster: Cluster
) -> None:
    """Writes the new leader never got go to a rollback file, exactly; then the old leader
    equals the new one."""
    db, leader, b, follower = trio
    insert(db, "shared")
    cluster.wait_caught_up(db, follower)
    follower.stop()  # it will never see what comes next
    lost = {insert(db, f"lost-{i}"): f"lost-{i}" for i in range(5)}
    wait_until(lambda: leader.status()["seq"] == log_head(db), "leader to see them")
    leader.kill9()
    follower.start()
    assert run_cli("promote", follower.url)["epoch"] == 2
    insert(b, "new timeline")
    with Sampler([follower]) as sampler:
        rejoined = cluster.follower(db, follower, port=leader.port)
        sampler.nodes.append(rejoined)
        cluster.wait_caught_up(b, rejoined)
    assert dump(db) == dump(b)
    rollback = rejoined.status()["rollback"]
    assert rollback and Path(rollback).exists()
    changes = [json.loads(line) for line in Path(rollback).read_text().splitlines()]
    assert {c["key"]["id"]: c["row"]["v"] for c in changes} == lost
    assert all(c["op"] == "upsert" and c["table"] == "t" for c in changes)
    assert "diverged" in rejoined.log()


def test_rejoin_with_divergent_rows_of_a_wide_key_table(
    trio: tuple[Path, Daemon, Path, Daemon], cluster: Cluster
) -> None:
    """A deposed leader whose divergent rows live in a WITHOUT ROWID table keyed by five
    columns rejoins: every such row is in its rollback file, keys whole."""
    db, leader, b, follower = trio
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE wide(a, b, c, d, e, v, PRIMARY KEY (a, b, c, d, e)) WITHOUT ROWID")
    conn.execute("INSERT INTO wide VALUES(0, 'x', 0.5, x'00', 'k', 'shared')")
    conn.commit()
    cluster.wait_caught_up(db, follower)
    follower.stop()
    lost = {(i, "x", i / 2, bytes([i]), "k"): f"lost-{i}" for i in range(1, 6)}
    conn.executemany(
        "INSERT INTO wide VALUES(?, ?, ?, ?, ?, ?)", [(*k, v) for k, v in lost.items()]
    )
    conn.execute("UPDATE wide SET v = 'changed' WHERE a = 0")
    conn.commit()
    conn.close()
    wait_until(lambda: leader.status()["seq"] == log_head(db), "leader to see them")
    leader.kill9()
    follower.start()
    assert run_cli("promote", follower.url)["epoch"] == 2
    rejoined = cluster.follower(db, follower, port=leader.port)
    cluster.wait_caught_up(b, rejoined)
    assert dump(db) == dump(b)
    rollback = rejoined.status()["rollback"]
    assert rollback and Path(rollback).exists()
    changes = [json.loads(line) for line in Path(rollback).read_text().splitlines()]
    assert all(c["op"] == "upsert" and c["table"] == "wide" for c in changes)
    got = {}
    for c in changes:
        k = c["key"]
        blob = k["d"]["base64"] if isinstance(k["d"], dict) else k["d"]
        got[(k["a"], k["b"], k["c"], base64.b64decode(blob), k["e"])] = c["row"]["v"]
    assert got == {**lost, (0, "x", 0.5, b"\x00", "k"): "changed"}
