"""etcd's HTTP gateway: what an unreachable etcd is reported as."""

from __future__ import annotations

import pytest

from sqlrepl.coord.gateway import Endpoints, parse
from sqlrepl.errors import PeerUnavailable


def test_an_error_with_no_text_is_named_by_its_type() -> None:
    endpoints = Endpoints(parse("etcd://127.0.0.1:9/c"))

    def fails(client: object) -> None:
        raise ConnectionResetError()

    with pytest.raises(PeerUnavailable) as raised:
        endpoints.call(fails)
    assert str(raised.value) == "etcd unreachable: 127.0.0.1:9: ConnectionResetError"
