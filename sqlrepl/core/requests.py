"""A follower's pull, `GET /batch?…`: built by the follower and parsed by the leader here
only, so the two cannot drift. Malformed parameters raise ProtocolError (the leader
answers 400 with its message)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..errors import ProtocolError


@dataclass(frozen=True)
class BatchRequest:
    #: The follower's position: it holds the leader's state at `after`, on `epoch`.
    after: int
    epoch: int = 0
    #: Seconds the leader may hold the pull open waiting for a change (a long poll).
    wait: int = 0
    #: Who asks: its node id and URL (for the registry, acknowledgements and status).
    node: str | None = None
    url: str = ""
    #: The follower's FTS5 tables' fingerprints (the leader resends an index that moved).
    fts5: dict[str, str] = field(default_factory=dict)
    #: Who began the follower's epoch (a fork shows as another node's epoch).
    epoch_url: str = ""
    #: An archive: recorded, but no replica (its pulls are no acknowledgements).
    archive: bool = False
    #: A replica that may never lead (--no-candidate): its pulls count for no `acks`.
    candidate: bool = True

    @property
    def voter(self) -> bool:
        """Do this follower's pulls count as acknowledgements (and put it in the sync set)?"""
        return self.candidate and not self.archive

    def query(self) -> dict[str, str]:
        return {
            "after": str(self.after),
            "epoch": str(self.epoch),
            "wait": str(self.wait),
            "node": self.node or "",
            "url": self.url,
            "fts5": json.dumps(self.fts5),
            "epoch_url": self.epoch_url,
            "archive": "1" if self.archive else "",
            "candidate": "" if self.candidate else "0",
        }

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> BatchRequest:
        return cls(
            after=query_int(query, "after"),
            epoch=query_int(query, "epoch", 0),
            wait=query_int(query, "wait", 0),
            node=query.get("node") or None,
            url=query.get("url", ""),
            fts5=_strings(query, "fts5"),
            epoch_url=query.get("epoch_url", ""),
            archive=bool(query.get("archive")),
            candidate=query.get("candidate") != "0",
        )


def query_int(query: Mapping[str, str], name: str, default: int | None = None) -> int:
    """An integer query parameter (`default` when absent; none: it is required)."""
    raw = query.get(name)
    if raw is None:
        if default is None:
            raise ProtocolError(f"missing parameter {name}")
        return default
    try:
        return int(raw)
    except ValueError:
        raise ProtocolError(f"parameter {name} must be an integer") from None


def _strings(query: Mapping[str, str], name: str) -> dict[str, str]:
    """A JSON object of strings passed as one parameter (absent: empty)."""
    raw = query.get(name)
    if raw is None:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        raise ProtocolError(f"parameter {name} must be JSON") from None
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ProtocolError(f"parameter {name} must be a JSON object of strings")
    return value
