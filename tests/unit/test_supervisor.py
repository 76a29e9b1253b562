"""The supervisor of a role's tasks: no silent deaths, one way to end a role."""

from __future__ import annotations

import asyncio
import logging

import pytest

from sqlrepl.errors import DatabaseError, TaskFailed
from sqlrepl.node.supervisor import Supervisor


async def forever() -> None:
    await asyncio.Event().wait()


async def boom() -> None:
    await asyncio.sleep(0.01)
    raise RuntimeError("kaboom")


def test_an_unexpected_failure_is_logged_with_its_traceback_and_ends_the_role(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A task that raises ends the role: the others are cancelled, the traceback is logged,
    and the supervisor raises TaskFailed naming the task."""
    cancelled = []

    async def watched() -> None:
        try:
            await forever()
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    async def role() -> None:
        done = asyncio.Event()
        async with Supervisor(done) as tasks:
            tasks.loop("waiting loop", watched())
            tasks.loop("change loop", boom())

    with caplog.at_level(logging.ERROR), pytest.raises(TaskFailed, match="change loop failed"):
        asyncio.run(asyncio.wait_for(role(), 5))
    assert cancelled == [True]
    record = next(r for r in caplog.records if "change loop" in r.getMessage())
    assert record.exc_info is not None and "kaboom" in str(record.exc_info[1])


def test_sqlrepl_errors_end_the_role_as_they_are() -> None:
    """One of sqlrepl's own errors ends the role and is raised unchanged (one line)."""

    async def wrong_file() -> None:
        raise DatabaseError("not a follower")

    async def role() -> None:
        async with Supervisor(asyncio.Event()) as tasks:
            tasks.loop("replication", wrong_file())

    with pytest.raises(DatabaseError, match="not a follower"):
        asyncio.run(asyncio.wait_for(role(), 5))


def test_done_ends_the_role_cancelling_loops_and_letting_tasks_finish() -> None:
    """Setting `done` cancels loops; tasks that end by themselves finish their cleanup;
    a loop cancelled on purpose (a restart) is no failure."""
    finished = []

    async def server(done: asyncio.Event) -> None:
        await done.wait()
        await asyncio.sleep(0.01)  # cleanup, not cut short
        finished.append("server")

    async def role() -> None:
        done = asyncio.Event()
        async with Supervisor(done) as tasks:
            restarted = tasks.loop("replication", forever())
            tasks.task("server", server(done))
            tasks.loop("other", forever())
            await asyncio.sleep(0.01)
            restarted.cancel()
            await asyncio.sleep(0.01)
            done.set()

    asyncio.run(asyncio.wait_for(role(), 5))
    assert finished == ["server"]
