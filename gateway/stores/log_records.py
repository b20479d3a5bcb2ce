"""Execution records: the fields of one execution, its id, and its row in ``executions``.

The record's fields are listed in the README's "Execution engine" section;
:mod:`gateway.stores.logs` stores and queries them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, Literal, get_args

import orjson
from sqlalchemy import RowMapping

from gateway.ids import new_execution_id
from gateway.redaction import Redactor
from gateway.stores.db import executions

__all__ = [
    "COLUMNS",
    "OUTCOMES",
    "ExecutionRecord",
    "Outcome",
    "isoformat",
    "new_execution_id",
    "new_record",
    "redacted_row",
]

# fmt: off
Outcome = Literal["success", "http_error", "timeout", "connect_error", "blocked", "rejected",
                  "pending_confirmation", "declined"]
# fmt: on
OUTCOMES: tuple[Outcome, ...] = get_args(Outcome)


def isoformat(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _json_default(value: Any) -> Any:
    # Logging must not fail on an odd value: bytes become text, anything else its str().
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", errors="replace")
    return str(value)


def _dumps(value: Any) -> str:
    return orjson.dumps(value, default=_json_default, option=orjson.OPT_NON_STR_KEYS).decode()


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True, kw_only=True)
class ExecutionRecord:
    """One execution, exactly the fields the README lists.

    ``id`` and ``timestamp`` fill themselves.
    """

    id: str = field(default_factory=new_execution_id)
    """Time-sortable id (see :func:`new_execution_id`)."""
    timestamp: datetime = field(default_factory=_now)
    """When the execution started, aware UTC."""
    agent_id: str | None = None
    """None for tests from the admin API or the CLI."""
    conversation_id: str | None = None
    action: str
    """The tool name the model (or test) asked for, even when no such action exists."""
    tool_call_id: str | None = None
    request: dict[str, Any]
    """``{method, url, headers, body}`` as sent (or as it would have been sent)."""
    response: dict[str, Any] | None = None
    """``{status_code, body, truncated}``, or None when nothing came back."""
    duration_ms: float = 0.0
    outcome: Outcome
    error: str | None = None
    injected: bool = False
    """Whether the result was given to the model."""
    injected_content: str | None = None
    """Exactly what the model was given."""

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready record, as the logs API and ``logs --json`` print it."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["timestamp"] = isoformat(self.timestamp)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExecutionRecord:
        """Rebuild a record from :meth:`to_dict` output (e.g. a ``logs --json`` line)."""
        values = dict(data)
        stamp = values.pop("timestamp")
        stamp = datetime.fromisoformat(stamp) if isinstance(stamp, str) else stamp
        return cls(timestamp=stamp.astimezone(UTC), **values)

    @classmethod
    def from_row(cls, row: RowMapping | Mapping[str, Any]) -> ExecutionRecord:
        """Rebuild a record from an ``executions`` row."""
        values = {f.name: row[f.name] for f in fields(cls)}
        values["request"] = orjson.loads(values["request"])
        if values["response"] is not None:
            values["response"] = orjson.loads(values["response"])
        values["injected"] = bool(values["injected"])
        return cls(**values)


new_record = ExecutionRecord
"""Factory: ``new_record(action=..., outcome=..., request=..., ...)`` stamps a fresh id and now."""


def redacted_row(record: ExecutionRecord, redactor: Redactor) -> list[Any]:
    """The record's column values in :data:`COLUMNS` order, redacted, before the dialect's
    conversions (a JSON-ready row but for the timestamp)."""
    response = record.response
    error, injected_content = record.error, record.injected_content
    row = [
        record.id,
        record.timestamp,
        _no_nul(record.agent_id),
        _no_nul(record.conversation_id),
        _no_nul(record.action),
        _no_nul(record.tool_call_id),
        _dumps(redactor.redact_request(record.request)),
        None if response is None else _dumps(redactor.redact_json(response)),
        float(record.duration_ms),
        record.outcome,
        None if error is None else _no_nul(redactor.redact_text(str(error))),
        bool(record.injected),
        None if injected_content is None else _no_nul(redactor.redact_text(str(injected_content))),
    ]
    return row


COLUMNS = tuple(str(column.name) for column in executions.columns)
"""The ``executions`` columns in table order, the order of :func:`redacted_row`."""
TIMESTAMP = COLUMNS.index("timestamp")


def _no_nul(value: Any) -> Any:
    # PostgreSQL text cannot hold NUL; a record must never be lost over one character.
    if isinstance(value, str) and "\x00" in value:
        return value.replace("\x00", "\ufffd")
    return value
