"""Daemon logging: one line per event, UTC timestamps, on stderr; as text for people or
as JSON for machines (`--log-format json`: one object per line with time, level, node,
role, epoch, logger, event and any fields).

Each role sets `config.LOG_CONTEXT` (node, role, epoch) for its tasks; every line carries it.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from .config import log_context


class _UTCFormatter(logging.Formatter):
    converter = time.gmtime  # type: ignore[assignment]


class JSONFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            **log_context(),  # null until the daemon knows it
            "logger": record.name,
            "event": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry["fields"] = fields
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def setup(verbose: bool, log_format: str = "text") -> None:
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(
            _UTCFormatter(
                "%(asctime)s.%(msecs)03dZ %(levelname)s %(name)s: %(message)s",
                "%Y-%m-%dT%H:%M:%S",
            )
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.getLogger("aiohttp").setLevel(logging.WARNING)
    logging.getLogger("watchdog").setLevel(logging.WARNING)
