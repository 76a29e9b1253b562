"""What the follower's components ask of the follower: narrow Protocols, so that none of
them imports the `Follower` it serves (no import circle, also for type checkers)."""

from __future__ import annotations

from typing import Any, Protocol

from ...coord import Coordinator
from ...core import roles
from ...core.decisions import Said
from ...core.positions import Position
from ..configs import FollowerConfig
from ..members import Members
from .archive import Recorder
from .bootstrap import LocalFile
from .progress import Progress


class Replicated(Protocol):
    """What the replication loop asks of the follower."""

    @property
    def config(self) -> FollowerConfig: ...
    @property
    def url(self) -> str: ...
    @property
    def cluster(self) -> str | None: ...

    coord: Coordinator
    node: str
    file: LocalFile
    archive: Recorder | None


class HAFollower(Protocol):
    """What the HA loop asks of a follower."""

    @property
    def config(self) -> FollowerConfig: ...
    @property
    def url(self) -> str: ...
    @property
    def leader(self) -> str: ...
    @property
    def progress(self) -> Progress: ...
    @property
    def cluster(self) -> str | None: ...

    coord: Coordinator
    node: str
    election: Said

    @property
    def transition(self) -> roles.Transition | None: ...

    def eligibility(self) -> tuple[bool, str | None]: ...
    def member_info(self, eligible: bool) -> dict[str, Any]: ...
    def repoint(self, url: str) -> None: ...
    async def become_leader(self, why: str, epoch: int | None = None) -> Position: ...


class ServedFollower(Replicated, HAFollower, Protocol):
    """What the follower's HTTP API asks of it (what the HA loop asks, and more)."""

    @property
    def keepalive(self) -> float: ...

    @property
    def history(self) -> list[dict[str, Any]]: ...
    @property
    def members(self) -> Members: ...

    promoted: bool
