"""Structured logs on stderr: logfmt (default) or JSON, one event per line.

Keys follow the Prometheus/promslog convention: time, level, msg, then the event's fields.
Fields come from `extra=` and from the context set once at start (service, key, alloc_id).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

LEVELS = {"error": logging.ERROR, "warn": logging.WARNING, "info": logging.INFO,
          "debug": logging.DEBUG}
_STANDARD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def _fields(record: logging.LogRecord, context: Mapping[str, str]) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        .replace("+00:00", "Z"),
        "level": "warn" if record.levelno == logging.WARNING else record.levelname.lower(),
        "msg": record.getMessage(),
        **context,
    }
    for name, value in vars(record).items():
        if name not in _STANDARD_ATTRS and not name.startswith("_"):
            fields[name] = value
    if record.exc_info:
        fields["error"] = logging.Formatter().formatException(record.exc_info).splitlines()[-1]
    return fields


def _logfmt_value(value: Any) -> str:
    text = "" if value is None else str(value)
    if text and not any(ch in text for ch in ' ="\\\n\t'):
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


class LogfmtFormatter(logging.Formatter):
    def __init__(self, context: Mapping[str, str]) -> None:
        super().__init__()
        self._context = dict(context)

    def format(self, record: logging.LogRecord) -> str:
        fields = _fields(record, self._context)
        return " ".join(f"{key}={_logfmt_value(value)}" for key, value in fields.items())


class JsonFormatter(logging.Formatter):
    def __init__(self, context: Mapping[str, str]) -> None:
        super().__init__()
        self._context = dict(context)

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(_fields(record, self._context), default=str)


def configure(level: str, fmt: str, context: Mapping[str, str]) -> None:
    handler = logging.StreamHandler(sys.stderr)
    formatter = JsonFormatter(context) if fmt == "json" else LogfmtFormatter(context)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(LEVELS.get(level, logging.WARNING))
    # urllib3 logs retries at debug and dumps whole certificates at warning on a name
    # mismatch; our own lines say what matters, once.
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    # transitions warns on every refused trigger; our own `refused` effect reports those.
    logging.getLogger("transitions").setLevel(logging.ERROR)
