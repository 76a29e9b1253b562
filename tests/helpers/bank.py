"""A bank: accounts whose sum never changes, transfers logged in a ledger; a torn read
or a lost transfer shows in the sum or in a hole of the ledger."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

from .daemons import Background

ACCOUNTS, TOTAL = 10, 1000


def bank_db(path: Path, mib: int) -> Path:
    """Accounts, a ledger of transfers, and `mib` MiB of incompressible filler."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE acct(id INTEGER PRIMARY KEY, bal INTEGER NOT NULL)")
    conn.execute("CREATE TABLE ledger(id INTEGER PRIMARY KEY, a INTEGER, b INTEGER)")
    conn.execute("CREATE TABLE filler(id INTEGER PRIMARY KEY, data BLOB)")
    conn.executemany(
        "INSERT INTO acct VALUES(?, ?)", [(i, TOTAL // ACCOUNTS) for i in range(ACCOUNTS)]
    )
    conn.execute(
        "WITH RECURSIVE i(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM i WHERE n < ?) "
        "INSERT INTO filler(data) SELECT randomblob(1000) FROM i",
        (mib * 1000,),
    )
    conn.commit()
    conn.close()
    return path


class Bank(Background):
    """An app moving one unit between two accounts per transaction, logged in the ledger,
    with the stdlib driver's defaults (deferred transactions, 5 s busy timeout)."""

    every = 0.005

    def __init__(self, db: Path) -> None:
        super().__init__()
        self.db = db
        self.committed = 0
        self.errors: list[str] = []

    def step(self) -> None:
        a, b = random.sample(range(ACCOUNTS), 2)
        try:
            conn = sqlite3.connect(self.db)
            with conn:
                conn.execute("UPDATE acct SET bal = bal - 1 WHERE id = ?", (a,))
                conn.execute("UPDATE acct SET bal = bal + 1 WHERE id = ?", (b,))
                conn.execute("INSERT INTO ledger(a, b) VALUES(?, ?)", (a, b))
            conn.close()
            self.committed += 1
        except sqlite3.Error as exc:
            self.errors.append(str(exc))


def consistent(db: Path) -> int:
    """The bank in `db` is whole: the sum holds and the ledger has no hole; its length."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        assert conn.execute("SELECT sum(bal) FROM acct").fetchone()[0] == TOTAL
        count, top = conn.execute("SELECT count(*), coalesce(max(id), 0) FROM ledger").fetchone()
        assert count == top, f"ledger has holes: {count} rows up to id {top}"
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return int(count)
    finally:
        conn.close()


class Readers(Background):
    """Read the sum of the accounts on every file; any other sum is a torn read."""

    every = 0.02

    def __init__(self, files: list[Path]) -> None:
        super().__init__()
        self.files = files
        self.reads = 0
        self.torn: list[str] = []

    def step(self) -> None:
        for db in self.files:
            if not db.exists():
                continue
            try:
                conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
                (total,) = conn.execute("SELECT sum(bal) FROM acct").fetchone()
                conn.close()
            except sqlite3.DatabaseError:
                continue  # not bootstrapped yet, or busy: not a read
            self.reads += 1
            if total != TOTAL:
                self.torn.append(f"{db.name}: sum {total}")
