"""A node's components in process: a Leader on a real file with the static coordinator,
served by aiohttp's test server; a follower's Replicator pulling from it; HA cycles with a
coordinator whose lease the test holds. No subprocess, no fixed sleep."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import apsw
import pytest
from aiohttp.test_utils import TestClient, TestServer

from sqlrepl.coord.static import Static
from sqlrepl.node import ha
from sqlrepl.node.configs import FollowerConfig, LeaderConfig
from sqlrepl.node.follower.role import Follower
from sqlrepl.node.leader.api import LeaderAPI
from sqlrepl.node.leader.gate import Role
from sqlrepl.node.leader.role import Leader

from ..helpers.apps import app_db
from ..helpers.dump import dump

DEADLINE = 30.0


class Lease(Static):
    """A coordinator that fails over by itself, whose lease the test holds or takes away
    (the clock seam: `expired` says the lease may have lapsed)."""

    name = "test"
    automatic = True

    def __init__(self) -> None:
        super().__init__()
        self.held, self.alive, self.expired = True, True, False

    def holds_lease(self) -> bool:
        return self.held

    def renew(self) -> bool:
        return self.alive

    def lease_may_have_expired(self) -> bool:
        return self.expired

    def release(self) -> None:
        self.held = False


@asynccontextmanager
async def served(db: Path, coord: Static | None = None) -> AsyncIterator[tuple[Leader, TestClient]]:
    """A Leader of `db` and a client of its HTTP API (on a loopback test server)."""
    leader = Leader(LeaderConfig(db, "127.0.0.1", 1), coord or Static())
    client = TestClient(TestServer(LeaderAPI(leader).app()))
    await client.start_server()
    try:
        yield leader, client
    finally:
        await client.close()
        leader.db.close()


async def until(predicate: Callable[[], Awaitable[bool]], what: str) -> None:
    end = time.monotonic() + DEADLINE
    while not await predicate():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def insert(db: Path, *values: str) -> None:
    """An app's write in one transaction. Through apsw, like the daemon: a second SQLite
    library in the same process would drop the daemon's POSIX locks when it closes the
    file (sqlrepl's daemons never mix them; apps are other processes)."""
    conn = apsw.Connection(str(db))
    conn.set_busy_timeout(5000)
    try:
        with conn:
            conn.executemany("INSERT INTO t(v) VALUES(?)", [(v,) for v in values])
    finally:
        conn.close()


def app_write_refused(db: Path) -> str | None:
    try:
        insert(db, "probe")
    except apsw.Error as exc:
        return str(exc)
    return None


async def answers(client: TestClient) -> dict[str, Any]:
    """What each endpoint says about writes here."""
    status = await (await client.get("/status")).json()
    metrics = await (await client.get("/metrics")).text()
    return {
        "/leader": (await client.get("/leader")).status,
        "writable": status["writable"],
        "gate": status["gate"],
        "metric": "sqlrepl_write_gate_open 1.0" in metrics,
    }


WRITABLE = {"/leader": 200, "writable": True, "gate": "open", "metric": True}


def test_every_endpoint_gives_the_write_gates_one_answer(tmp_path: Path) -> None:
    """Holding the gate for too few sync replicas, then stepping down: /leader, /status
    and /metrics agree with the gate all along, and with what an app's write meets."""

    async def scenario() -> None:
        db = app_db(tmp_path / "a.db")
        async with served(db) as (leader, client):
            assert await answers(client) == WRITABLE
            await leader.gate.hold_shut("only 0 of the 1 followers are fresh")
            assert await answers(client) == {**WRITABLE, "/leader": 503, "writable": False,
                                             "gate": "closed", "metric": False}  # fmt: skip
            assert "only 0 of the 1" in str(app_write_refused(db))
            refused = await (await client.get("/leader")).json()  # it names the gate's reason
            assert "only 0 of the 1" in refused["error"], refused
            status = await (await client.get("/status")).json()
            assert "only 0 of the 1 followers are fresh" in status["problems"]
            await leader.gate.release("fresh again")
            assert await answers(client) == WRITABLE
            assert app_write_refused(db) is None
            await leader.step_down("told to", release=False)
            assert leader.leadership.role is Role.STEPPED_DOWN
            assert (await client.get("/health")).status == 503
            assert await answers(client) == {**WRITABLE, "/leader": 503, "writable": False,
                                             "gate": "closed", "metric": False}  # fmt: skip
            assert app_write_refused(db) is not None

    asyncio.run(scenario())


def test_a_replicator_pulls_an_in_process_leader_to_equality(tmp_path: Path) -> None:
    """A follower's Replicator bootstraps from the leader's snapshot, then pulls batches
    as the leader publishes new heads, and ends equal to it."""

    async def scenario() -> None:
        db = app_db(tmp_path / "a.db")
        insert(db, *(f"before-{i}" for i in range(100)))
        async with served(db) as (leader, client):
            url = str(client.make_url("")).rstrip("/")
            follower = Follower(
                FollowerConfig(tmp_path / "b.db", "127.0.0.1", 2, leader=url), Static()
            )
            replicator, stop = follower.replicator, asyncio.Event()
            task = asyncio.create_task(replicator.run(stop))
            try:
                for round_ in range(5):
                    insert(db, *(f"r{round_}-{i}" for i in range(50)))
                    head = await leader.refresh()  # what the change loop does on a file event

                    async def caught_up(head: int = head) -> bool:
                        where = replicator.progress.position
                        return where is not None and where.seq >= head

                    await until(caught_up, f"the follower at seq {head}")
                assert replicator.progress.state == "streaming"
                # Every applied batch is fsynced before the next pull acknowledges it,
                # whatever the SQLite build's default (issue 25: durable = on disk).
                conn = follower.file.db.conn if follower.file.db else None
                assert conn is not None
                assert conn.execute("PRAGMA synchronous").fetchall() == [(2,)]
            finally:
                stop.set()
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                await replicator.close()
                follower.file.close()
        mine, theirs = dump(db)["t"], dump(tmp_path / "b.db")["t"]
        assert len(mine) == len(theirs) and mine == theirs, (len(mine), len(theirs))

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("fault", "sentence"),
    [
        ("lost", "stepped down: lease lost"),
        ("expired", "stepped down: the leader lease may have expired"),
    ],
)
def test_ha_cycle_steps_down_when_the_lease_goes(tmp_path: Path, fault: str, sentence: str) -> None:
    """An HA cycle that finds its lease lost (or possibly lapsed: the clock) closes the
    file's gate before anything else, gives the lease up, and says why."""

    async def scenario() -> None:
        db = app_db(tmp_path / "a.db")
        coord = Lease()
        async with served(db, coord) as (leader, _client):
            assert await ha.leader_cycle(leader) == "leading epoch 1 with the lease"
            assert leader.gate.writable()
            if fault == "lost":
                coord.alive = False
            else:
                coord.expired = True
            assert await ha.leader_cycle(leader) == sentence
            assert not leader.gate.writable() and not leader.gate.is_open
            assert leader.leadership.role is Role.STEPPED_DOWN and not coord.held
            assert "writes refused" in str(app_write_refused(db))

    asyncio.run(scenario())
