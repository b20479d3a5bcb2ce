"""The Logs pages' filter form: from the query string to a :class:`LogFilter`, and back to links.

The form is a GET, so a filtered page, its next page and its JSON lines download are plain links
carrying the same fields. The "From" and "To" fields are ``datetime-local`` values read as UTC
(the tables print UTC); "To" includes its whole minute (or second, when it names seconds), so
filtering "from 14:00 to 14:30" keeps a record of 14:30:20, as an operator would expect.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

from starlette.datastructures import QueryParams

from gateway.stores.log_queries import LogFilter
from gateway.stores.logs import OUTCOMES

__all__ = ["FIELDS", "LogForm", "read_log_form"]

FIELDS = ("action", "agent", "outcome", "conversation_id", "from", "to")
"""The form's field names, in the order links carry them."""

_LABELS = {
    "action": "Action",
    "agent": "Agent",
    "outcome": "Outcome",
    "conversation_id": "Conversation id",
    "from": "From",
    "to": "To",
}
_MINUTE_LENGTH = len("2026-12-07T14:30")


@dataclass(frozen=True, slots=True)
class LogForm:
    """The filter form as submitted: what to query, what to show back, what was wrong."""

    where: LogFilter
    values: dict[str, str] = field(default_factory=dict)
    """The non-empty fields as typed (shown back in the form and kept in links)."""
    error: str | None = None
    """Why the form cannot be used (naming the field); nothing is queried then."""

    def link(self, path: str, **extra: str) -> str:
        """``path`` with this form's fields (and ``extra``, e.g. a cursor) as its query."""
        query = urlencode({**self.values, **extra})
        return f"{path}?{query}" if query else path


def _moment(name: str, text: str) -> datetime:
    """A ``datetime-local`` value as an aware UTC moment (one with an offset keeps it)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{_LABELS[name]}: {text!r} is not a date and time (expected e.g. 2026-12-07T14:30)"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _until(text: str) -> datetime:
    """The exclusive end of the range "To" names: the end of its minute, or of its second."""
    moment = _moment("to", text).replace(microsecond=0)
    if len(text) <= _MINUTE_LENGTH:
        return moment.replace(second=0) + timedelta(minutes=1)
    return moment + timedelta(seconds=1)


def _values(params: QueryParams, fixed: set[str]) -> dict[str, str]:
    values = {}
    for name in FIELDS:
        text = (params.get(name) or "").strip()
        if text and name not in fixed:
            values[name] = text
    return values


def read_log_form(params: QueryParams, *, action: str | None = None) -> LogForm:
    """The filter the query string asks for; ``action`` fixes the action (an action's tab).

    An unusable field (an unknown outcome, a malformed date, a NUL character) makes the form's
    ``error`` name it; the pages then query nothing rather than everything.
    """
    values = _values(params, {"action"} if action is not None else set())
    try:
        for name, text in values.items():
            if "\x00" in text:
                raise ValueError(f"{_LABELS[name]}: contains a NUL character")
        outcome = values.get("outcome")
        if outcome is not None and outcome not in OUTCOMES:
            raise ValueError(f"Outcome: {outcome!r} is not one of {', '.join(OUTCOMES)}")
        since = _moment("from", values["from"]) if "from" in values else None
        until = _until(values["to"]) if "to" in values else None
    except ValueError as e:
        return LogForm(LogFilter(), values, str(e))
    where = LogFilter(
        action=action if action is not None else values.get("action"),
        agent=values.get("agent"),
        conversation_id=values.get("conversation_id"),
        outcome=outcome,
        since=since,
        until=until,
    )
    return LogForm(where, values)
