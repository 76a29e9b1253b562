"""The files sqlrepl keeps beside a database `DB` (never inside it): their names, in one
place. None is ever committed (.gitignore lists each; a test checks it).

    DB.sqlrepl-lock       one daemon per file (a POSIX lock the kernel releases)
    DB.sqlrepl-members    the members a node has seen (where to find the leader)
    DB.sqlrepl-cluster    the cluster a leader file belongs to (tables dropped by an app)
    DB.sqlrepl-fresh      a follower's freshness proof, for apps reading the file
    DB.sqlrepl-reserve    space a leader keeps to close its gate on a full disk
    DB.sqlrepl-download   a follower's snapshot download (resumable; `.json` its state)
    .DB.PID.sqlrepl-tmp   a file being written, renamed into place when whole
    .DB.sqlrepl-probe     the disk check's probe
    DB.rollback-…jsonl    a deposed leader's divergent writes
    DB.fork-…db           a follower's copy of its file when it found itself on a fork
"""

from __future__ import annotations

from pathlib import Path

LOCK = ".sqlrepl-lock"
MEMBERS = ".sqlrepl-members"
CLUSTER = ".sqlrepl-cluster"
FRESH = ".sqlrepl-fresh"
RESERVE = ".sqlrepl-reserve"
DOWNLOAD = ".sqlrepl-download"
TEMP = ".sqlrepl-tmp"
PROBE = ".sqlrepl-probe"
#: Every suffix above, for checks that each is ignored by version control.
ALL = (LOCK, MEMBERS, CLUSTER, FRESH, RESERVE, DOWNLOAD, TEMP, PROBE)


def beside(db: Path, suffix: str) -> Path:
    """The sidecar `suffix` of `db`: `DB<suffix>` in the same directory."""
    return db.with_name(db.name + suffix)


def rollback(db: Path, epoch: int, fork: int, now: float) -> Path:
    return db.with_name(f"{db.name}.rollback-e{epoch}-s{fork}-{int(now)}.jsonl")


def fork_copy(db: Path, epoch: int, seq: int, now: float) -> Path:
    return db.with_name(f"{db.name}.fork-e{epoch}-s{seq}-{int(now)}.db")
