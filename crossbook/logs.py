"""Structured logs: one JSON object per line, the format every service writes.

JSON lines rather than free text because an operator greps, ships and parses them (`jq`, Loki,
CloudWatch): each record carries ``ts`` (ISO-8601 UTC), ``level``, ``service``, ``logger`` and
``msg``, plus ``exc`` for a traceback and any ``extra={...}`` fields the caller attached.
``--log-format text`` keeps the old human format for a terminal.
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import sys
from typing import Any

# LogRecord attributes that are plumbing, not caller-supplied context
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line; ``service`` names the process in a shared log stream."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        """The record as compact JSON (non-JSON values are rendered with ``str``)."""
        out: dict[str, Any] = {
            "ts": _dt.datetime.fromtimestamp(record.created, _dt.timezone.utc)
            .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for k, v in vars(record).items():
            if k not in _STANDARD and not k.startswith("_"):
                out[k] = v
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, separators=(",", ":"))


def setup_logging(service: str, level: str = "INFO", fmt: str | None = None) -> None:
    """Configure the root logger of a service process (call once, at start).

    ``fmt`` is ``json`` (default; ``$CROSSBOOK_LOG_FORMAT``) or ``text``. Logs go to stderr: the
    supervisor (or docker) captures them into the service's log file.
    """
    fmt = (fmt or os.environ.get("CROSSBOOK_LOG_FORMAT") or "json").lower()
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "text":
        handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s {service} %(name)s %(message)s"))
    else:
        handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(str(level).upper())
    # one line per websocket open/close and per HTTP request drowns what matters
    logging.getLogger("websockets").setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.WARNING)


__all__ = ["JsonFormatter", "setup_logging"]
