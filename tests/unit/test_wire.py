"""The batch header on the wire: one shape for the builder and the applier, read also as
an older leader sends it."""

from __future__ import annotations

import json

import pytest

from sqlrepl.core.wire import Header, TableShape
from sqlrepl.errors import ProtocolError

HISTORY = [{"epoch": 2, "start_seq": 10, "url": "http://a:7300", "why": "x", "at": 1.0}]


def header(**changes: object) -> dict:
    wire = Header(
        cluster="c",
        epoch=2,
        after=10,
        head=12,
        schema=None,
        tables={3: TableShape("docs_data", ("id",), ("block",), True, "docs")},
        sequences=None,
        history=HISTORY,
    ).to_wire()
    wire.update(changes)
    return wire


def test_the_history_is_a_list_and_fts5_membership_is_in_the_shape() -> None:
    back = Header.from_wire(header())
    assert back.history == HISTORY
    assert back.tables[3].fts5 == "docs"


def test_an_older_leaders_header_still_reads() -> None:
    """History as JSON text and table shapes of four fields (before the FTS5 owner)."""
    old = header(history=json.dumps(HISTORY), tables={3: ["t", ["id"], ["v"], True]})
    back = Header.from_wire(old)
    assert back.history == HISTORY and back.tables[3] == TableShape("t", ("id",), ("v",), True)


def test_a_malformed_history_is_refused() -> None:
    with pytest.raises(ProtocolError):
        Header.from_wire(header(history=7))
