"""The leader's log as followers see it: the position it leads from, the newest seq
(published to the pulls waiting for it), and its epoch history."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from ...core.positions import Position


class LogHead:
    def __init__(self, position: Position, history: list[dict[str, Any]]) -> None:
        self._position = position
        self._seq = position.seq
        self._history = history
        self._changed = asyncio.Condition()
        self._closed = False

    @property
    def position(self) -> Position:
        """Where this node's epoch began (its epoch, and the seq it led from)."""
        return self._position

    @property
    def epoch(self) -> int:
        return self._position.epoch

    @property
    def seq(self) -> int:
        """The newest change in the log that followers may be sent."""
        return self._seq

    @property
    def history(self) -> list[dict[str, Any]]:
        return self._history

    def new_epoch(self, position: Position, history: list[dict[str, Any]]) -> None:
        self._position, self._history = position, history

    async def publish(self, seq: int) -> None:
        """A newer head: wake every pull waiting for one."""
        if seq == self._seq:
            return
        self._seq = seq
        async with self._changed:
            self._changed.notify_all()

    async def wait_past(self, after: int, wait: float) -> None:
        """Wait (up to `wait` seconds) for a head other than `after`, or the end."""
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._changed.wait_for(lambda: self._seq != after or self._closed)

    async def close(self) -> None:
        """The role ends: answer every waiting pull at once."""
        self._closed = True
        async with self._changed:
            self._changed.notify_all()
