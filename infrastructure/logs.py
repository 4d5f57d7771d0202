"""Log records as one JSON object a line (or text, for development), each
with the request and the trace it belongs to.

What a record may say is decided where it is made: no token, password, code
or email is ever passed to a logger (the request log names a user by id).
"""

from __future__ import annotations

import json
import logging
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from opentelemetry import trace

LogFormat = Literal["json", "text"]
# The request log's fields, as records carry them (`extra={FIELDS: {...}}`).
FIELDS = "fields"


@dataclass
class RequestFacts:
    """What the request log tells of the request being answered: its id, and
    the user once a credential names one."""

    request_id: str
    user_id: str | None = None


CURRENT_REQUEST: ContextVar[RequestFacts | None] = ContextVar(
    "authledger_request", default=None
)


def note_user(user_id: object) -> None:
    """Name the request's user in its log line."""
    facts = CURRENT_REQUEST.get()
    if facts is not None:
        facts.user_id = str(user_id)


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, the request id
    and trace id it was logged under, its fields, and any error's traceback."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        facts = CURRENT_REQUEST.get()
        if facts is not None:
            entry["request_id"] = facts.request_id
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            entry["trace_id"] = format(span.trace_id, "032x")
            entry["span_id"] = format(span.span_id, "016x")
        entry.update(getattr(record, FIELDS, None) or {})
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def log_config(log_format: LogFormat, level: str = "info") -> dict[str, Any]:
    """A logging.config dict: every record, uvicorn's too, in `log_format` on
    stderr. uvicorn's access log is off: the request log replaces it."""
    formatter = (
        {"()": JsonFormatter}
        if log_format == "json"
        else {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}
    )
    handler = {"class": "logging.StreamHandler", "formatter": "main"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"main": formatter},
        "handlers": {"main": handler},
        "root": {"handlers": ["main"], "level": level.upper()},
        "loggers": {
            name: {"handlers": [], "propagate": True}
            for name in ("uvicorn", "uvicorn.error")
        }
        | {"uvicorn.access": {"handlers": [], "propagate": False}},
    }
