"""Routing by health: the load-balancer endpoints through a real HAProxy, and the write
gate that --min-sync-replicas keeps closed while too few followers are fresh."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

import sqlrepl

from ..helpers.apps import app_db
from ..helpers.daemons import Cluster, Daemon, free_port, insert, wait_until
from ..helpers.daemons import sqlrepl as run

TOKEN = {"SQLREPL_TOKEN": "s3cret-routing"}


def answer(url: str) -> tuple[int, dict]:
    """Status code and JSON body of a GET without the token."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status), json.load(response)
    except urllib.error.HTTPError as exc:
        body = exc.read()
        return int(exc.code), json.loads(body) if body.startswith(b"{") else {}
    except (urllib.error.URLError, OSError):
        return 0, {}  # nothing listens (yet)


@pytest.fixture
def three(tmp_path: Path, cluster: Cluster) -> tuple[Path, Daemon, Daemon, Daemon]:
    db = app_db(tmp_path / "a.db")
    leader = cluster.leader(db, env=TOKEN)
    b = cluster.follower(tmp_path / "b.db", leader)
    c = cluster.follower(tmp_path / "c.db", leader)
    return db, leader, b, c


def test_health_endpoints_answer_without_the_token_and_say_only_the_role(
    three: tuple[Path, Daemon, Daemon, Daemon],
) -> None:
    """/leader is 200 only on the leader with an open gate, /replica only on followers
    within the bounds asked, /health on every working node; /status still needs the token."""
    db, leader, b, c = three
    assert answer(leader.url + "/status")[0] == 401
    assert answer(leader.url + "/leader") == (200, {"role": "leader", "writable": True})
    assert answer(leader.url + "/health")[0] == 200
    assert answer(leader.url + "/replica")[0] == 503
    insert(db, "x")
    sqlrepl.wait(
        sqlrepl.token(sqlite3.connect(db)), leader.url, acks=2, auth=TOKEN["SQLREPL_TOKEN"]
    )
    for follower in (b, c):
        assert answer(follower.url + "/leader")[0] == 503
        assert answer(follower.url + "/health")[0] == 200
        code, body = answer(follower.url + "/replica?lag=0&seconds=5")
        assert code == 200 and body["lag"]["changes"] == 0, body
        assert answer(follower.url + "/replica?lag=abc")[0] == 400
    leader.kill9()  # followers keep serving reads; how stale they may be grows

    def stale() -> bool:
        return answer(b.url + "/replica?seconds=1")[0] == 503

    wait_until(stale, "a follower cut off from its leader to fail a staleness bound")
    assert answer(b.url + "/replica")[0] == 200  # with no bound it still serves reads
    assert answer(b.url + "/health")[0] == 200


HAPROXY_CONFIG = """
global
    maxconn 64
defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
frontend writes
    bind 127.0.0.1:{writes}
    default_backend leader
frontend reads
    bind 127.0.0.1:{reads}
    default_backend replicas
backend leader
    option httpchk GET /leader
    http-check expect status 200
    default-server inter 200ms fall 1 rise 1
{leader_servers}
backend replicas
    option httpchk GET /replica?lag=100&seconds=10
    http-check expect status 200
    default-server inter 200ms fall 1 rise 1
{replica_servers}
"""


@pytest.fixture
def haproxy(tmp_path: Path, three: tuple[Path, Daemon, Daemon, Daemon]) -> Iterator[dict]:
    if shutil.which("haproxy") is None:
        pytest.skip("haproxy is not installed (scripts/test.sh installs it)")
    _db, *nodes = three
    writes, reads = free_port(), free_port()
    servers = "\n".join(f"    server n{i} 127.0.0.1:{n.port} check" for i, n in enumerate(nodes))
    config = tmp_path / "haproxy.cfg"
    config.write_text(
        HAPROXY_CONFIG.format(
            writes=writes, reads=reads, leader_servers=servers, replica_servers=servers
        )
    )
    check = subprocess.run(["haproxy", "-c", "-f", str(config)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    proc = subprocess.Popen(
        ["haproxy", "-db", "-f", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        yield {"writes": f"http://127.0.0.1:{writes}", "reads": f"http://127.0.0.1:{reads}"}
    finally:
        proc.terminate()
        proc.wait(10)


def routed_to(front: str) -> str | None:
    """The role a request through HAProxy's frontend reached (None: no server)."""
    code, body = answer(front + "/health")
    return body.get("role") if code == 200 else None


def only(front: str, role: str) -> bool:
    return all(routed_to(front) == role for _ in range(12))


def test_haproxy_sends_writes_to_the_leader_and_reads_to_fresh_replicas(
    three: tuple[Path, Daemon, Daemon, Daemon], haproxy: dict
) -> None:
    """Through a real HAProxy checking /leader and /replica: every write-side request
    reaches the leader, every read-side one a follower; after a switchover the write
    side follows the new leader by itself."""
    _db, leader, b, _c = three
    # HAProxy counts every server up until its first check: wait for the checks.
    wait_until(lambda: only(haproxy["writes"], "leader"), "HAProxy to find the leader")
    wait_until(lambda: only(haproxy["reads"], "follower"), "HAProxy to find the replicas")
    assert {routed_to(haproxy["writes"]) for _ in range(20)} == {"leader"}
    assert {routed_to(haproxy["reads"]) for _ in range(20)} == {"follower"}
    moved = run("switchover", "--to", b.url, env=TOKEN)
    assert moved.returncode == 0, moved.stderr
    wait_until(lambda: answer(leader.url + "/leader")[0] == 503, "the old leader to refuse")

    wait_until(lambda: only(haproxy["writes"], "leader"), "writes to go to the new leader")
    assert answer(b.url + "/leader")[0] == 200
    wait_until(lambda: only(haproxy["reads"], "follower"), "reads to go to the replicas")
    assert {routed_to(haproxy["reads"]) for _ in range(20)} == {"follower"}


def accepts(db: Path) -> bool:
    try:
        insert(db, "probe", timeout=0.5)
        return True
    except sqlite3.DatabaseError:
        return False


def test_min_sync_replicas_closes_the_gate_while_too_few_followers_are_fresh(
    tmp_path: Path, cluster: Cluster
) -> None:
    """With --min-sync-replicas 1: no app write commits until a follower is connected;
    once its only follower is stopped, writes are refused with a clear reason (in the
    app's error and in status) within the lag bound; they resume when it is back."""
    db = app_db(tmp_path / "a.db")
    leader = cluster.leader(db, "--min-sync-replicas", "1", "--max-replica-lag", "1")
    assert not accepts(db)
    problems = " ".join(leader.status()["problems"])
    assert "min_sync_replicas" in problems, problems
    follower = cluster.follower(tmp_path / "b.db", leader)
    wait_until(lambda: accepts(db), "writes to be accepted with a fresh follower")
    assert leader.status()["gate"] == "open"
    follower.stop()
    wait_until(lambda: not accepts(db), "writes to be refused without the follower")
    try:
        insert(db, "refused")
        raise AssertionError("a write committed with no sync replica")
    except sqlite3.DatabaseError as exc:
        assert "min_sync_replicas" in str(exc) or "writes refused" in str(exc), exc
    follower.start()
    wait_until(lambda: accepts(db), "writes to resume once the follower is back")
