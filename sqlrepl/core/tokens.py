"""Position tokens: what an app learns of its commit, and whether a node holds it.

A token is the string `"E:S"`: the epoch and seq of a file's position right after a
commit (`SELECT token FROM _sqlrepl_position`). Seqs run on across epochs, so a node
holds a token once its position reached seq S on a timeline that contains it: epoch E
is the node's own, or one its history records, and epoch E did not end before seq S
there. A token past the end of its epoch on this timeline was never part of it (a
deposed leader's write that was not replicated) and can never be held: `TokenForked`.
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError, TokenForked
from .positions import Position
from .roles import start_of_next_epoch


def parse(token: str) -> Position:
    """`"E:S"` -> Position(E, S); ConfigError for anything else."""
    epoch, sep, seq = str(token).strip().partition(":")
    if not sep or not epoch.isdigit() or not seq.isdigit():
        raise ConfigError(f"{token!r} is not a position token (EPOCH:SEQ, e.g. 3:1041)")
    return Position(int(epoch), int(seq))


def format_token(at: Position) -> str:
    return f"{at.epoch}:{at.seq}"


def holds(history: list[dict[str, Any]], have: Position, token: Position) -> bool:
    """Does a node at `have`, with this epoch history, hold `token`? False: not yet.
    Raises TokenForked if it never can on this timeline."""
    if token.epoch > have.epoch:
        return False  # a newer epoch than this node accepted: it may yet
    if token.epoch < have.epoch:
        known = {int(h["epoch"]) for h in history}
        first = min(known, default=have.epoch)
        if token.epoch not in known and token.epoch > first:
            raise TokenForked(
                f"token {format_token(token)}: epoch {token.epoch} is not on this node's "
                "timeline (its writes were never replicated here)"
            )
        end = start_of_next_epoch(history, token.epoch)
        if end is not None and token.seq > end:
            raise TokenForked(
                f"token {format_token(token)} is past a fork: epoch {token.epoch} ended at "
                f"seq {end} on this timeline, so seq {token.seq} of it was never replicated"
            )
    return have.seq >= token.seq
