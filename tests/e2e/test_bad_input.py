"""Bad input: a clear error, a non-zero exit for commands, and nothing applied or overwritten."""

from __future__ import annotations

import socket
import sqlite3
from pathlib import Path

import apsw
import pytest

from sqlrepl.core import apply
from sqlrepl.errors import ProtocolError

from ..helpers.apps import make_db
from ..helpers.daemons import Cluster, free_port, get_json, sqlrepl, wait_until
from ..helpers.dump import dump
from ..helpers.replica import Replica


def test_corrupt_or_truncated_batch_applies_nothing(replica: Replica) -> None:
    """A batch with a flipped byte or a missing tail is rejected whole."""
    app = apsw.Connection(str(replica.leader_path))
    app.execute("CREATE TABLE t(x)")
    replica.sync()
    app.executemany("INSERT INTO t VALUES(?)", [(i,) for i in range(3000)])
    app.close()
    data = replica.batch_bytes()
    before = dump(replica.follower_path)
    corrupt = bytearray(data)
    corrupt[len(data) // 2] ^= 0xFF
    for bad in (bytes(corrupt), data[: len(data) - 5], data[: len(data) // 2], b"garbage" * 10):
        with pytest.raises(ProtocolError):
            apply.apply_stream(replica.follower, bad)
        assert dump(replica.follower_path) == before
    apply.apply_stream(replica.follower, data)
    assert dump(replica.follower_path) == dump(replica.leader_path)


def test_follower_refuses_non_sqlite_file(tmp_path: Path, cluster: Cluster) -> None:
    """A follower DB that is not SQLite is refused and left untouched."""
    leader = cluster.leader(make_db(tmp_path / "app.db", "CREATE TABLE t(x)"))
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all" * 100)
    result = sqlrepl(
        "follower", str(junk), "--leader", leader.url, "--listen", f"127.0.0.1:{free_port()}"
    )
    assert result.returncode == 1
    assert "not a SQLite database" in result.stderr
    assert junk.read_bytes() == b"not a database at all" * 100


def test_follower_refuses_plain_database(tmp_path: Path, cluster: Cluster) -> None:
    """An existing database that is not a follower is never overwritten."""
    leader = cluster.leader(make_db(tmp_path / "app.db", "CREATE TABLE t(x)"))
    mine = make_db(
        tmp_path / "mine.db", "CREATE TABLE precious(x)", "INSERT INTO precious VALUES(1)"
    )
    before = mine.read_bytes()
    result = sqlrepl(
        "follower", str(mine), "--leader", leader.url, "--listen", f"127.0.0.1:{free_port()}"
    )
    assert result.returncode == 1
    assert "not a sqlrepl follower" in result.stderr
    assert mine.read_bytes() == before


def test_follower_of_another_cluster_is_refused(tmp_path: Path, cluster: Cluster) -> None:
    """A follower file of one leader refuses to follow another cluster's leader."""
    a = cluster.leader(make_db(tmp_path / "a.db", "CREATE TABLE t(x)"))
    b = cluster.leader(make_db(tmp_path / "b.db", "CREATE TABLE t(x)"))
    replica = tmp_path / "replica.db"
    cluster.follower(replica, a).stop()
    before = dump(replica)
    result = sqlrepl(
        "follower", str(replica), "--leader", b.url, "--listen", f"127.0.0.1:{free_port()}"
    )
    assert result.returncode == 1
    assert "belongs to cluster" in result.stderr
    assert dump(replica) == before


def test_dead_leader_is_retried_and_reported(tmp_path: Path, cluster: Cluster) -> None:
    """With the leader down the follower retries with backoff and says so in log and status."""
    db = make_db(tmp_path / "app.db", "CREATE TABLE t(x)")
    leader = cluster.leader(db)
    follower = cluster.follower(tmp_path / "replica.db", leader)
    leader.kill9()
    wait_until(lambda: follower.status()["state"] == "retrying", "follower to report retrying")
    assert "unreachable" in follower.status()["error"]
    assert "retrying" in follower.log()
    sqlite3.connect(db).execute("INSERT INTO t VALUES(1)").connection.commit()
    leader.start()
    cluster.wait_caught_up(db, follower)
    assert follower.status()["error"] is None


def test_follower_with_nothing_at_leader_url_keeps_retrying(
    tmp_path: Path, cluster: Cluster
) -> None:
    """A follower pointed at a dead URL does not create a file and reports the error."""
    port = free_port()
    args = [
        "follower",
        str(tmp_path / "r.db"),
        "--leader",
        f"http://127.0.0.1:{free_port()}",
        "--listen",
        f"127.0.0.1:{port}",
    ]
    from ..helpers.daemons import Daemon

    d = Daemon(tmp_path, "lonely", args, port)
    cluster.daemons.append(d)
    d.start(ready=False)
    wait_until(lambda: "unreachable" in d.log(), "the follower to log the dead leader")
    assert get_json(d.url + "/status")["state"] == "retrying"
    assert not (tmp_path / "r.db").exists()


def test_malformed_requests_get_4xx_and_daemon_survives(tmp_path: Path, cluster: Cluster) -> None:
    """Bad parameters and garbage bytes get 4xx; the leader keeps serving."""
    leader = cluster.leader(make_db(tmp_path / "app.db", "CREATE TABLE t(x)"))
    import urllib.error
    import urllib.request

    for query in ("/batch", "/batch?after=abc", "/batch?after=1&wait=x", "/nope"):
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(leader.url + query, timeout=5)
        assert 400 <= info.value.code < 500
    with socket.create_connection(("127.0.0.1", leader.port)) as s:
        s.sendall(b"\x00\xffGARBAGE / HTTP/9.9\r\n\r\n")
        assert b" 400 " in s.recv(1000)
    assert leader.status()["role"] == "leader"


def test_tokens(tmp_path: Path, cluster: Cluster) -> None:
    """Off loopback a token is required; without the right token a request gets 401."""
    db = make_db(tmp_path / "app.db", "CREATE TABLE t(x)")
    refused = sqlrepl("leader", str(db), "--listen", f"0.0.0.0:{free_port()}")
    assert refused.returncode == 1 and "without a token" in refused.stderr
    env = {"SQLREPL_TOKEN": "s3cret"}
    leader = cluster.leader(db, env=env)
    import urllib.error

    with pytest.raises(urllib.error.HTTPError) as info:
        get_json(leader.url + "/status")
    assert info.value.code == 401
    follower = cluster.follower(tmp_path / "replica.db", leader)
    cluster.wait_caught_up(db, follower)
    wrong = sqlrepl(
        "follower",
        str(tmp_path / "other.db"),
        "--leader",
        leader.url,
        "--listen",
        f"127.0.0.1:{free_port()}",
        env={"SQLREPL_TOKEN": "wrong"},
    )
    assert wrong.returncode == 1 and "refused our token" in wrong.stderr
    assert not (tmp_path / "other.db").exists()
