"""The cluster's own settings: they bind whichever node leads, not one process. Pure.

Stored with the cluster (etcd: the `settings` key; static: carried from the leader to
its followers with every batch, so a promoted follower leads by them). The first node
of a new cluster seeds them from its flags or TOML; afterwards the cluster's value wins,
a node whose own differs logs a warning, and `sqlrepl config cluster URL --set KEY=VALUE`
changes them at run time.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from ..config import DEFAULT_MAX_REPLICA_LAG
from ..errors import ConfigError

#: What each setting means (status, `config cluster` and the docs say it).
MEANING = {
    "min_sync_replicas": "writes are refused while fewer followers are connected and fresh",
    "max_replica_lag": "seconds behind the head a follower may be and count as fresh",
    "sync_acks": "k of the sync set from the start (0: from an app's first acks commit)",
}


@dataclass(frozen=True)
class ClusterSettings:
    min_sync_replicas: int = 0
    max_replica_lag: float = DEFAULT_MAX_REPLICA_LAG
    sync_acks: int = 0

    def dump(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def load(cls, raw: str | bytes | Mapping[str, Any] | None) -> ClusterSettings:
        """Settings as stored (unknown keys, e.g. from a newer version, are kept out)."""
        if raw is None:
            return cls()
        value = raw if isinstance(raw, Mapping) else json.loads(raw)
        known = {f.name for f in fields(cls)}
        return cls().changed({k: str(v) for k, v in value.items() if k in known})

    def changed(self, pairs: Mapping[str, str]) -> ClusterSettings:
        """These settings with `pairs` (KEY -> text) applied; ConfigError names a bad one."""
        values: dict[str, Any] = {}
        for key, text in pairs.items():
            if key not in MEANING:
                raise ConfigError(f"{key!r} is no cluster setting (one of: {', '.join(MEANING)})")
            try:
                number = float(text) if key == "max_replica_lag" else int(text)
            except ValueError:
                raise ConfigError(f"{key} must be a number, not {text!r}") from None
            if number < 0:
                raise ConfigError(f"{key} must be 0 or more, not {text}")
            values[key] = number
        return replace(self, **values)

    def differences(self, other: ClusterSettings) -> list[str]:
        """`KEY A (other B)` for each setting that differs."""
        mine, theirs = asdict(self), asdict(other)
        return [
            f"{k} {mine[k]:g} (the cluster's {theirs[k]:g})" for k in mine if mine[k] != theirs[k]
        ]
