"""The `sqlrepl` command line: each command loads options, makes one library call, renders.

base      the group, error handling (one line, exit 1; usage errors exit 2), shared options
daemons   leader, follower
cluster   status, promote, switchover, history
files     snapshot, demo
node      node --config (the role from the cluster), config check
archive   archive DIR --leader URL, archive verify, archive list
"""

from __future__ import annotations

from . import archive, cluster, daemons, files, node
from .base import cli


def main() -> None:
    cli()


__all__ = ["archive", "cli", "cluster", "daemons", "files", "main", "node"]
