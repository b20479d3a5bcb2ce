"""Request ids and structured logs.

Every response carries ``x-request-id``: the client's own when it sent a usable one (1 to 128
characters of letters, digits and ``._:-``), else a new one (a random per-process prefix and a
counter: unique across processes, and cheap). The id is in :data:`REQUEST_ID` for the request's
duration, so every log line written on its behalf carries it.

``serve --log-format json`` writes one JSON object per line — ``time``, ``level``, ``logger``,
``pid`` (which worker), ``message``, ``request_id`` and, where the line is about one,
``conversation_id``, ``agent``, ``front``, ``status``, ``action``, ``outcome``, ``ms`` — and
``--log-format text`` the same
fields as ``key=value`` after the message. At ``--log-level info`` there is one
``actiongate.access`` line per client request and one ``actiongate.actions`` line per action
call; warnings and errors are written at every level.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

__all__ = [
    "FIELDS",
    "REQUEST_ID",
    "JsonFormatter",
    "TextFormatter",
    "configure",
    "new_request_id",
    "request_id_of",
    "uvicorn_config",
]

REQUEST_ID: ContextVar[str | None] = ContextVar("actiongate_request_id", default=None)
FIELDS = ("conversation_id", "agent", "front", "status", "action", "outcome", "ms")
"""The ``extra`` fields a line may carry, in the order they are written."""
LogFormat = Literal["text", "json"]

_USABLE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_PREFIX = os.urandom(4).hex()
_COUNTER = itertools.count(1)


def new_request_id() -> str:
    """A fresh request id."""
    return f"{_PREFIX}-{next(_COUNTER):x}"


def request_id_of(client_value: bytes | None) -> str:
    """The client's ``x-request-id`` when usable, else a new one."""
    if client_value:
        text = client_value.decode("latin-1")
        if _USABLE.fullmatch(text):
            return text
    return new_request_id()


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    out: dict[str, Any] = {}
    request_id = REQUEST_ID.get()
    if request_id is not None:
        out["request_id"] = request_id
    for name in FIELDS:
        value = record.__dict__.get(name)
        if value is not None:
            out[name] = value
    return out


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


class TextFormatter(logging.Formatter):
    """``time level logger: message key=value ...``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extra = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        return f"{text} {extra}" if extra else text


def _formatter(fmt: LogFormat) -> logging.Formatter:
    return JsonFormatter() if fmt == "json" else TextFormatter()


def configure(fmt: LogFormat, level: str) -> None:
    """Send the ``actiongate`` loggers to stderr in ``fmt`` at ``level`` (``serve``).

    Text at ``warning`` and above is left as Python writes it by default (the message alone),
    as it always was.
    """
    if fmt == "text" and level.lower() in ("warning", "error"):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_formatter(fmt))
    root = logging.getLogger("actiongate")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


def uvicorn_config(fmt: LogFormat) -> dict[str, Any]:
    """uvicorn's logging config writing its own lines in ``fmt`` too."""
    name = f"{__name__}.{'JsonFormatter' if fmt == 'json' else 'TextFormatter'}"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"actiongate": {"()": name}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "actiongate",
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            "uvicorn": {"handlers": ["stderr"], "propagate": False},
            "uvicorn.access": {"handlers": [], "propagate": False},
        },
    }
