"""Acknowledged means durable (issue 25): a commit whose `acks=1` acknowledgement returned
is on the next leader, however the election goes. Three nodes, each in its own network
namespace, a real etcd, apps committing through `sqlrepl.connect(acks=1)` on every
node's file every 50 ms; faults by blackhole routes, SIGSTOP and kill -9; every
acknowledged value is looked for in the final leader's file."""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from pathlib import Path

import pytest

import sqlrepl

from ..helpers.apps import TTL, app_db, values, wait_open_leader
from ..helpers.daemons import Background, Daemon, wait_until
from ..helpers.etcd import EtcdServer
from ..helpers.netns import TOKEN, Net

ROUNDS = 3


class Writer(Background):
    """An app on one node's file: one row per transaction, `acks=1` at the node's URL;
    keeps every value whose commit() returned."""

    every = 0.05

    def __init__(self, db: Path, url: str, name: str) -> None:
        super().__init__()
        self.db, self.url, self.name = db, url, name
        self.acked: list[str] = []
        self.tried = 0

    def step(self) -> None:
        self.tried += 1
        value = f"{self.name}-{self.tried}"
        try:
            conn = sqlrepl.connect(self.db, self.url, acks=1, timeout=2, auth=TOKEN)
            try:
                conn.execute("INSERT INTO t(v) VALUES(?)", (value,))
                conn.commit()
                self.acked.append(value)
            finally:
                conn.close()
        except (sqlite3.Error, sqlrepl.SqlreplError):
            pass


class Node:
    def __init__(self, net: Net, tmp: Path, name: str, args: list[str], db: Path) -> None:
        self.ns = net.add(name)
        self.address = net.nodes[self.ns]
        self.db = db
        self.daemon = net.daemon(tmp, self.ns, name, [*args])

    def restart(self) -> None:
        self.daemon.stop()
        self.daemon.start()


@pytest.mark.parametrize("fault", ["cut from etcd", "frozen"])
def test_acknowledged_commits_survive_every_election(tmp_path: Path, fault: str) -> None:
    """Per round: follower S is cut off from the leader and from follower F (it still
    reaches etcd) while apps commit; then F loses etcd (or is frozen by SIGSTOP) and the
    leader is killed -9. S, behind by every write acknowledged meanwhile, must not be
    elected: it waits, saying for whom, and F leads once it is back. Three rounds, the
    roles turning; at the end every acknowledged value is in the leader's file."""
    with Net() as net:
        etcd = EtcdServer(tmp_path, host=net.etcd_host).start()
        try:
            _rounds(tmp_path, net, etcd, fault)
        finally:
            etcd.stop()


def _rounds(tmp: Path, net: Net, etcd: EtcdServer, fault: str) -> None:
    coord = ["--coordinator", etcd.coordinator(), "--ttl", str(TTL)]
    dbs = [app_db(tmp / "n0.db"), tmp / "n1.db", tmp / "n2.db"]
    nodes = [Node(net, tmp, "n0", ["leader", str(dbs[0]), *coord], dbs[0])]
    writers: list[Writer] = []
    try:
        nodes[0].daemon.start()
        wait_until(lambda: nodes[0].daemon.status().get("gate") == "open", "the first leader")
        for i in (1, 2):
            args = ["follower", str(dbs[i]), "--leader", nodes[0].daemon.url, *coord]
            nodes.append(Node(net, tmp, f"n{i}", args, dbs[i]))
            nodes[i].daemon.start()
        writers = [Writer(n.db, n.daemon.url, n.daemon.name) for n in nodes]
        for w in writers:
            w.__enter__()
        leader, f, s = nodes
        for round_ in range(ROUNDS):
            leader, f, s = _round(net, leader, f, s, fault, round_, writers), s, leader
        for w in writers:
            w.__exit__()
        final = wait_open_leader([n.daemon for n in nodes], "the last leader", 30)
        acked = {v for w in writers for v in w.acked}
        held = values(next(n.db for n in nodes if n.daemon is final))
        missing = acked - held
        assert not missing, f"{len(missing)} acknowledged commits lost: {sorted(missing)[:5]}"
    finally:
        for w in writers:
            w.__exit__()
        for n in nodes:
            n.daemon.stop()


def _round(
    net: Net, leader: Node, f: Node, s: Node, fault: str, round_: int, writers: list[Writer]
) -> Node:
    """One failover; the new leader (F)."""
    lead = leader.daemon
    wait_until(lambda: _caught_up(lead, f.daemon, s.daemon), f"round {round_}: all caught up")
    net.cut(s.ns, leader.address, f.address)
    try:
        try:
            wait_until(
                lambda: _sync_members(lead) == [_node(f.daemon)],
                f"round {round_}: the sync set to drop the cut-off follower",
            )
        except AssertionError:
            seen = lead.status()
            raise AssertionError(f"{seen.get('sync_set')}; {seen.get('followers')}") from None
        # Writes acknowledged while S cannot have them: what an election of S would lose.
        before = sum(len(w.acked) for w in writers)
        wait_until(
            lambda: sum(len(w.acked) for w in writers) >= before + 20,
            f"round {round_}: writes acknowledged while one follower is cut off",
        )
        if fault == "frozen":
            assert f.daemon.proc is not None
            os.kill(f.daemon.proc.pid, signal.SIGSTOP)
        else:
            net.cut(f.ns, net.etcd_host)
        lead.kill9()
        died = time.monotonic()
        try:
            wait_until(
                lambda: "waiting for" in str(s.daemon.status().get("election")),
                f"round {round_}: the stale follower to wait for {f.daemon.name}",
                TTL * 4,
            )
            # Longer than a candidate remembers a peer whose key lapsed (2 x TTL): the
            # stale follower must wait for the rule, not for a memory of F.
            while time.monotonic() - died < 2 * TTL + 1:
                assert s.daemon.status().get("role") == "follower", "the stale one leads"
                time.sleep(0.2)
        finally:
            if fault == "frozen":
                assert f.daemon.proc is not None
                os.kill(f.daemon.proc.pid, signal.SIGCONT)
            else:
                net.heal(f.ns, net.etcd_host)
        back = time.monotonic()
        winner = wait_open_leader([f.daemon, s.daemon], f"round {round_}: a new leader", 30)
        assert winner is f.daemon, f"round {round_}: {winner.name} was elected"
        # Not asserted (no test asserts a duration): what the closing note reports.
        print(f"{fault} round {round_}: {time.monotonic() - back:.1f} s from the holder's return")
    finally:
        net.heal(s.ns, leader.address, f.address)
    lead.start()  # the same command again: it rejoins as a follower
    return f


def _node(d: Daemon) -> str:
    return str(d.status()["node"])


def _sync_members(leader: Daemon) -> list[str]:
    view = leader.status().get("sync_set") or {}
    return list(view.get("members") or [])


def _caught_up(leader: Daemon, *followers: Daemon) -> bool:
    head = leader.status()
    if head.get("gate") != "open":
        return False
    return all((d.status().get("seq") or -1) >= head["seq"] for d in followers)
