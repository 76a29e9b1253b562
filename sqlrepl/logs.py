"""Daemon logging: one line per event, UTC timestamps, on stderr."""

from __future__ import annotations

import logging
import time


class _UTCFormatter(logging.Formatter):
    converter = time.gmtime  # type: ignore[assignment]


def setup(verbose: bool) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(
        _UTCFormatter(
            "%(asctime)s.%(msecs)03dZ %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S"
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.getLogger("aiohttp").setLevel(logging.WARNING)
    logging.getLogger("watchdog").setLevel(logging.WARNING)
