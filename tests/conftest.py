from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .replica import Replica


@pytest.fixture
def replica(tmp_path: Path) -> Iterator[Replica]:
    r = Replica(tmp_path)
    yield r
    r.close()
