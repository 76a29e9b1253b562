"""The fault-injection suite: a three-node etcd cluster under partitions, flapping and
slow links, frozen and killed processes, each scenario run three times.

Every node reaches etcd through a TCP proxy of its own and is reached by its peers
through another (it advertises the proxy's URL), so a fault can cut, blackhole or slow
one node's links. An independent checker runs all along, outside the daemons:

- apps attempt a write on every node's file every 50 ms and remember each commit; two
  files accepting at once is a failure (attempted, not read from `status`);
- transfers between ten accounts (a constant sum) commit on whichever file accepts, and
  readers on every file check the sum on every read (no torn read, ever);
- at the end, once the faults are healed: every acknowledged write is on the final leader
  or in an announced rollback file, and every follower equals its leader.

Each run prints one `chaos:` line (failover and healing times) for the closing report.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ..helpers.apps import app_db, open_leader, unaccounted, wait_open_leader
from ..helpers.bank import Readers
from ..helpers.daemons import Background, Cluster, Daemon, WriteSampler, free_port, wait_until
from ..helpers.dump import dump
from ..helpers.etcd import EtcdServer
from ..helpers.proxy import Proxy

TTL = 4
ACCOUNTS, TOTAL = 10, 1000
RUNS = 3


class Transfers(Background):
    """Move one unit between two accounts, in one transaction, on whichever file takes it."""

    every = 0.02

    def __init__(self, files: list[Path]) -> None:
        super().__init__()
        self.files = files
        self.committed = 0
        self.lock = threading.Lock()

    def step(self) -> None:
        with self.lock:
            self._transfer()

    def _transfer(self) -> None:
        a, b = random.sample(range(ACCOUNTS), 2)
        for db in self.files:
            try:
                conn = sqlite3.connect(db, timeout=1)
                with conn:
                    conn.execute("UPDATE acct SET bal = bal - 1 WHERE id = ?", (a,))
                    conn.execute("UPDATE acct SET bal = bal + 1 WHERE id = ?", (b,))
                conn.close()
                self.committed += 1
                return
            except sqlite3.DatabaseError:
                continue


@dataclass
class Node:
    daemon: Daemon
    db: Path
    etcd: Proxy  # this node's link to etcd
    inbound: Proxy  # its peers' link to it


@dataclass
class Chaos:
    tmp: Path
    cluster: Cluster
    nodes: list[Node] = field(default_factory=list)

    @property
    def daemons(self) -> list[Daemon]:
        return [n.daemon for n in self.nodes]

    @property
    def files(self) -> list[Path]:
        return [n.db for n in self.nodes]

    def leader(self) -> Node:
        """The node that leads with its gate open (waiting for one)."""
        found = wait_open_leader(self.daemons, "the leader")
        return self.nodes[self.daemons.index(found)]

    def wait_new_leader(self, old: Node, sampler: WriteSampler, deadline: float) -> float:
        """Seconds until a node other than `old` took an app write (attempted by the
        sampler), from now."""
        start, seen = time.monotonic(), len(sampler.accepted_on)
        others = {n.db for n in self.nodes if n is not old}
        wait_until(lambda: bool(set(sampler.accepted_on[seen:]) & others), "a new leader", deadline)
        return time.monotonic() - start

    def heal_and_check(
        self, sampler: WriteSampler, transfers: Transfers, readers: Readers
    ) -> float:
        """Heal every link and process; wait until one leader serves and the others follow
        it caught up; check the invariants. Returns the time healing took."""
        start = time.monotonic()
        for n in self.nodes:
            n.etcd.heal()
            n.inbound.heal()
            if n.daemon.proc is not None and n.daemon.proc.poll() is None:
                os.kill(n.daemon.proc.pid, signal.SIGCONT)
            else:
                n.daemon.start(ready=False)
        # Read together, with a deadline: while the cluster settles, the node that leads
        # with its gate open may change (a lease renewed late closes a gate for a cycle).
        settled: list[Node] = []

        def one_leader_followed() -> bool:
            found = open_leader(self.daemons)
            if found is None:
                return False
            leader = self.nodes[self.daemons.index(found)]
            others = [n.daemon for n in self.nodes if n is not leader]
            settled[:] = [leader]
            return all(_follows(f, leader) for f in others)

        wait_until(one_leader_followed, "one leader, followed by the others", 90)
        leader = settled[0]
        followers = [n.daemon for n in self.nodes if n is not leader]
        self.cluster.wait_caught_up(leader.db, *followers, deadline=60)
        healed = time.monotonic() - start
        with sampler.paused(), transfers.lock:
            self.cluster.wait_caught_up(leader.db, *followers, deadline=60)
            for n in self.nodes:
                if n is not leader:
                    assert dump(n.db) == dump(leader.db), f"{n.db.name} differs from its leader"
            missing = unaccounted(set(sampler.acked), leader.db, self.tmp)
        assert missing == set(), f"acknowledged writes lost: {sorted(missing)[:10]}"
        assert readers.torn == [], readers.torn[:5]
        assert readers.reads > 0
        return healed


def _follows(node: Daemon, leader: Node) -> bool:
    try:
        s = node.status()
    except OSError:
        return False
    return s.get("role") == "follower" and s.get("leader") == leader.inbound.url


@pytest.fixture
def chaos(tmp_path: Path, cluster: Cluster, etcd: EtcdServer) -> Iterator[Chaos]:
    c = Chaos(tmp_path, cluster)
    with contextlib.ExitStack() as proxies:
        try:
            for i in range(3):
                port = free_port()
                link = proxies.enter_context(Proxy(etcd.client_port))
                inbound = proxies.enter_context(Proxy(port))
                db = tmp_path / f"n{i}.db"
                args = [
                    "--coordinator", f"etcd://127.0.0.1:{link.port}/chaos", "--ttl", str(TTL),
                    "--advertise", inbound.url,
                ]  # fmt: skip
                if i == 0:
                    _accounts(app_db(db))
                    daemon = cluster.leader(db, *args, port=port)
                    wait_until(
                        lambda d=daemon: d.status().get("gate") == "open", "the first leader"
                    )
                else:
                    daemon = cluster.follower(db, c.nodes[0].inbound.url, *args, port=port)
                c.nodes.append(Node(daemon, db, link, inbound))
            cluster.wait_caught_up(c.files[0], *c.daemons[1:])
            yield c
        finally:
            cluster.stop()  # the daemons go before their links do


def _accounts(db: Path) -> None:
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("CREATE TABLE acct(id INTEGER PRIMARY KEY, bal INTEGER NOT NULL)")
        conn.executemany(
            "INSERT INTO acct VALUES(?, ?)", [(i, TOTAL // ACCOUNTS) for i in range(ACCOUNTS)]
        )
    conn.close()


def _run(chaos: Chaos, name: str, fault: Callable[[Chaos, WriteSampler], float | None]) -> None:
    with (
        WriteSampler(chaos.daemons, chaos.files) as sampler,
        Transfers(chaos.files) as transfers,
        Readers(chaos.files) as readers,
    ):
        wait_until(lambda: len(sampler.acked) > 10, "app writes before the fault")
        failover = fault(chaos, sampler)
        healed = chaos.heal_and_check(sampler, transfers, readers)
    shown = "-" if failover is None else f"{failover:.2f}s"
    print(
        f"chaos: {name} failover={shown} heal={healed:.2f}s writes={len(sampler.acked)} "
        f"transfers={transfers.committed} reads={readers.reads}"
    )


def leader_loses_etcd(chaos: Chaos, sampler: WriteSampler) -> float:
    old = chaos.leader()
    old.etcd.cut()
    return chaos.wait_new_leader(old, sampler, TTL + 20)


def leader_isolated(chaos: Chaos, sampler: WriteSampler) -> float:
    """Cut from etcd and from its followers; links dead without a reset (blackhole)."""
    old = chaos.leader()
    old.etcd.blackhole()
    old.inbound.blackhole()
    return chaos.wait_new_leader(old, sampler, TTL + 20)


def flapping_etcd_link(chaos: Chaos, sampler: WriteSampler) -> None:
    """The leader's link to etcd goes down and up at random for 12 s."""
    old = chaos.leader()
    end = time.monotonic() + 12
    while time.monotonic() < end:
        old.etcd.cut()
        _pause(random.uniform(0.3, 2.5))
        old.etcd.heal()
        _pause(random.uniform(0.3, 2.0))
    return None


def slow_links_then_kill(chaos: Chaos, sampler: WriteSampler) -> float:
    """150 ms each way on every link (300 ms round trips), 5 % of packets "lost" (late by a
    retransmission timeout), then kill -9 of the leader."""
    for n in chaos.nodes:
        n.etcd.delay(0.15, loss=0.05)
        n.inbound.delay(0.15, loss=0.05)
    _pause(2 * TTL)  # run slowed for a while: no spurious failover (checked by the sampler)
    old = chaos.leader()
    old.daemon.kill9()
    return chaos.wait_new_leader(old, sampler, TTL + 30)


def frozen_leader(chaos: Chaos, sampler: WriteSampler) -> float:
    """SIGSTOP of the leader past its TTL; it resumes (SIGCONT) while another leads."""
    old = chaos.leader()
    assert old.daemon.proc is not None
    os.kill(old.daemon.proc.pid, signal.SIGSTOP)
    took = chaos.wait_new_leader(old, sampler, TTL + 20)
    os.kill(old.daemon.proc.pid, signal.SIGCONT)
    return took


def _pause(seconds: float) -> None:
    """Let a fault last: the only fixed waits here, and they wait for nothing."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(0.05)


SCENARIOS = {
    "leader_loses_etcd": leader_loses_etcd,
    "leader_isolated": leader_isolated,
    "flapping_etcd_link": flapping_etcd_link,
    "slow_links_then_kill": slow_links_then_kill,
    "frozen_leader": frozen_leader,
}


@pytest.mark.parametrize("run", range(1, RUNS + 1))
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_chaos(chaos: Chaos, name: str, run: int) -> None:
    _run(chaos, f"{name}#{run}", SCENARIOS[name])
