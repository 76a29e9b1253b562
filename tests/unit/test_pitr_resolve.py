"""Which state `restore --at TIME` picks: the newest one reached by then."""

from __future__ import annotations

from pathlib import Path

from sqlrepl.core.positions import Position
from sqlrepl.core.segments import Record
from sqlrepl.pitr import Chain, Shot, resolve


def record(after: int, received_at: float) -> tuple[Path, Record]:
    return Path("seg"), Record(Position(1, after - 1), Position(1, after), received_at, 0, 0, 0)


def test_a_snapshot_stamped_after_a_newer_batch_does_not_win() -> None:
    """A snapshot pinned at seq 5 is stamped (t=10) after batch 6 arrived (t=9): at t=11
    the state is seq 6, not the snapshot's older one."""
    chain = Chain(1, [Shot(Path("s"), 1, Position(1, 5), 10.0)], [record(6, 9.0)])
    assert resolve({1: chain}, "@11")[1] == Position(1, 6)
    assert resolve({1: chain}, "@9.5")[1] == Position(1, 6)


def test_a_later_chain_wins_and_nothing_from_the_future() -> None:
    """After a restart the archive starts a new chain; a time before a state is never
    answered with that state."""
    old = Chain(1, [Shot(Path("a"), 1, Position(1, 1), 1.0)], [record(2, 2.0), record(3, 3.0)])
    new = Chain(2, [Shot(Path("b"), 2, Position(1, 3), 5.0)], [record(4, 6.0)])
    chains = {1: old, 2: new}
    assert resolve(chains, "@2.5") == (old, Position(1, 2))
    assert resolve(chains, "@5.5") == (new, Position(1, 3))
    assert resolve(chains, "@7") == (new, Position(1, 4))
