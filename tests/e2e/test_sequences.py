"""Random operator sequences in static mode, the way operators really run a cluster:
switchover, SIGTERM and restart with the same command, kill -9 and promote, kill -9 of a
follower, a follower re-pointed at another follower. Throughout, an app writes to the
leader and a sampler attempts writes on every node. After each sequence every follower
equals its leader or reports a fork, and every acknowledged write is accounted for."""

from __future__ import annotations

import json
import random
import signal
from pathlib import Path

import pytest

from ..helpers.apps import app_db, open_leader, unaccounted
from ..helpers.daemons import Cluster, Daemon, Sampler, Writer, WriteSampler, sqlrepl, wait_until
from ..helpers.dump import dump, epoch, log_head

SEQUENCES, STEPS = 20, 3


class Ops:
    def __init__(self, cluster: Cluster, nodes: list[Daemon], files: list[Path], seed: int):
        self.cluster, self.nodes, self.files = cluster, nodes, files
        self.rnd = random.Random(seed)
        self.done: list[str] = []

    def leader(self) -> Daemon:
        found: list[Daemon | None] = [None]

        def one() -> bool:  # one answer, not two: roles move between two calls
            found[0] = open_leader(self.nodes)
            return found[0] is not None

        wait_until(one, "one open leader", 20)
        assert found[0] is not None
        return found[0]

    def file(self, node: Daemon) -> Path:
        return self.files[self.nodes.index(node)]

    def followers(self) -> list[Daemon]:
        lead = self.leader()
        return [n for n in self.nodes if n is not lead]

    def settle(self) -> None:
        lead = self.leader()
        for f in self.followers():
            wait_until(lambda f=f: f.role() == "follower", "followers up", 20)
        self.cluster.wait_caught_up(self.file(lead), *self.followers(), deadline=30)

    def switchover(self) -> None:
        target = self.rnd.choice(self.followers())
        result = sqlrepl("switchover", "--to", target.url)
        self.done.append(f"switchover -> {target.name}: {result.returncode}")

    def sigterm_and_restart(self) -> None:
        lead = self.leader()
        assert lead.proc is not None
        lead.proc.send_signal(signal.SIGTERM)
        lead.proc.wait(15)
        self.done.append(f"sigterm {lead.name}")
        lead.start()

    def kill_and_promote(self) -> None:
        lead = self.leader()
        lead.kill9()
        best = max(self.followers_of(lead), key=lambda n: n.status().get("seq") or -1)
        result = sqlrepl("promote", best.url)
        self.done.append(f"kill -9 {lead.name}, promote {best.name}: {result.returncode}")
        lead.start()

    def followers_of(self, dead: Daemon) -> list[Daemon]:
        return [n for n in self.nodes if n is not dead]

    def kill_follower(self) -> None:
        victim = self.rnd.choice(self.followers())
        victim.kill9()
        self.done.append(f"kill -9 follower {victim.name}")
        victim.start()

    def repoint(self) -> None:
        """Restart a follower pointed at another follower (a stale operator note)."""
        victim, other = self.rnd.sample(self.followers(), 2)
        victim.stop()
        i = victim.args.index("--leader") if "--leader" in victim.args else None
        if i is not None:
            victim.args[i + 1] = other.url
        self.done.append(f"re-point {victim.name} at {other.name}")
        victim.start()

    def step(self) -> None:
        ops = [self.switchover, self.sigterm_and_restart, self.kill_and_promote,
               self.kill_follower, self.repoint]  # fmt: skip
        self.rnd.choice(ops)()


def check_followers(ops: Ops) -> None:
    """With writes paused: every follower that claims to hold everything its leader has
    equals it; every other one has reported a fork (its content saved)."""
    lead = ops.leader()
    lead_db = ops.file(lead)
    head, current = log_head(lead_db), epoch(lead_db)

    def settled(f: Daemon) -> bool:
        s = f.status()
        claims = s.get("seq") == head and s.get("epoch") == current and s["state"] == "streaming"
        return claims or bool(s.get("rollback"))

    for f in ops.followers():
        wait_until(lambda f=f: settled(f), f"{f.name} to settle", 30)
        s = f.status()
        if s.get("seq") == head and s.get("epoch") == current:
            mine, theirs = dump(ops.file(f)), dump(lead_db)
            diff = set(mine["t"]) ^ set(theirs["t"])
            assert mine == theirs, (sorted(diff)[:6], f.name, s["seq"], s["epoch"], ops.done[-6:])


@pytest.mark.timeout(600)  # its length follows the machine's load: a hang guard, no more
def test_random_operator_sequences_never_fork_silently(tmp_path: Path, cluster: Cluster) -> None:
    """Twenty random sequences of operator actions on one static cluster under load."""
    files = [app_db(tmp_path / "n0.db"), tmp_path / "n1.db", tmp_path / "n2.db"]
    first = cluster.leader(files[0])
    nodes = [first, *(cluster.follower(f, first) for f in files[1:])]
    ops = Ops(cluster, nodes, files, seed=20261128)
    acked: set[str] = set()
    with Sampler(nodes), WriteSampler(nodes, files) as probes:
        for sequence in range(SEQUENCES):
            with Writer(ops.file(ops.leader())) as writer:
                for _ in range(STEPS):
                    ops.step()
                    writer.db = ops.file(ops.leader())
            acked |= set(writer.acked)
            with probes.paused():
                ops.settle()
                check_followers(ops)
            print(f"sequence {sequence}: {ops.done[-STEPS:]}")
    final = ops.file(ops.leader())
    assert unaccounted(acked | set(probes.acked), final, tmp_path) == set(), ops.done
    print(json.dumps(ops.done))
