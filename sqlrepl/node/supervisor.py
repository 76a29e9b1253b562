"""One supervisor per role: every background task runs under it, none dies silently.

A role (leader or follower) runs its tasks — loops, the HTTP server — inside one
`asyncio.TaskGroup`. The role ends when its `done` event is set: by a stop signal, a
handover, or the first task that fails. A failure is logged (with its traceback when it
is not one of sqlrepl's own errors) and re-raised from the supervisor once every task has
stopped: the one path by which a fatal error ends a role (the daemon then exits 1 with
one line).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from ..core.roles import Transition
from ..errors import SqlreplError, TaskFailed

log = logging.getLogger("sqlrepl")
#: A role that passes on ends this long after it said so (its last answer is sent first).
END_DELAY = 0.05


class RoleEnd:
    """How a role ends: `event` is set when it does, and `transition` says what the node
    becomes then (None: it stops, on a signal or a failure)."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self._transition: Transition | None = None

    @property
    def transition(self) -> Transition | None:
        return self._transition

    def claim(self, transition: Transition | None) -> None:
        """Say what the role will turn into (one change at a time), or nothing after all."""
        self._transition = transition

    def pass_on(self, transition: Transition) -> None:
        """End the role shortly, turning into `transition`."""
        self._transition = transition
        asyncio.get_running_loop().call_later(END_DELAY, self.event.set)


class Supervisor:
    """`async with Supervisor(done) as s:` start tasks with `s.loop(...)` (cancelled when the
    role ends) or `s.task(...)` (ends by itself once `done` is set); the block waits for
    `done`, then for every task, then raises the first failure."""

    def __init__(self, done: asyncio.Event) -> None:
        self.done = done
        self.failure: BaseException | None = None
        self._group = asyncio.TaskGroup()
        self._loops: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Supervisor:
        await self._group.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        try:
            if exc_info[0] is None:
                await self.done.wait()
        finally:
            self.done.set()
            for task in self._loops:
                task.cancel()
            await self._group.__aexit__(*exc_info)
        if self.failure is not None:
            raise self.failure

    def loop(self, name: str, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run `work` until the role ends (then it is cancelled)."""
        task = self._group.create_task(self._guard(name, work), name=name)
        self._loops.append(task)
        return task

    def task(self, name: str, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run `work`, which returns by itself once `done` is set (e.g. the HTTP server)."""
        return self._group.create_task(self._guard(name, work), name=name)

    async def _guard(self, name: str, work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except asyncio.CancelledError:
            raise
        except SqlreplError as exc:
            log.error("%s failed: %s; ending this role", name, exc)
            self._fail(exc)
        except Exception as exc:
            log.exception("%s failed unexpectedly; ending this role", name)
            self._fail(TaskFailed(f"{name} failed: {exc!r} (traceback in the log)"))

    def _fail(self, exc: BaseException) -> None:
        if self.failure is None:
            self.failure = exc
        self.done.set()
