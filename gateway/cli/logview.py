"""``actiongate logs``: print execution records, newest first, optionally following new ones.

Conversation ids and tool names come from clients and models: every character a terminal would
act on (escape sequences, line breaks, bidirectional overrides) is printed as an escape, so a
record can neither forge log lines nor restyle the terminal.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Mapping
from typing import Any

from gateway.definitions.config import DEFAULT_DATABASE
from gateway.stores.db import migrate
from gateway.stores.engines import create_engine
from gateway.stores.logs import ExecutionRecord, LogStore

__all__ = ["format_line", "json_line", "show_logs", "terminal_text"]

FOLLOW_INTERVAL_S = 1.0
_SHORT = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(char: str) -> str:
    if char in _SHORT:
        return _SHORT[char]
    if char.isprintable():
        return char
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def terminal_text(text: str) -> str:
    """``text`` with backslashes and every non-printable character written as escapes.

    Non-printable is Python's :meth:`str.isprintable`: control characters (C0, DEL, C1),
    format characters such as bidirectional overrides, line and paragraph separators. The
    backslash is doubled so an escape in the output always means the character it names.
    """
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(map(_escape, text))


def _json_escape(char: str) -> str:
    if char.isprintable():
        return char
    code = ord(char)
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    code -= 0x10000  # JSON spells characters beyond the BMP as a surrogate pair
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def json_line(value: Any) -> str:
    """``value`` as one line of JSON, non-ASCII text kept but non-printable characters escaped.

    ``json.dumps`` already escapes C0 controls; DEL, C1 controls (0x9b starts an escape
    sequence on some terminals), bidirectional overrides and separators are escaped here. They
    only occur inside JSON strings, so the line still decodes to exactly ``value``.
    """
    text = json.dumps(value, ensure_ascii=False)
    return text if text.isprintable() else "".join(map(_json_escape, text))


def format_line(record: ExecutionRecord) -> str:
    """One human-readable line per record, every field printable (see :func:`terminal_text`)."""
    status = record.response["status_code"] if record.response else "-"
    stamp = record.to_dict()["timestamp"]
    action = terminal_text(record.action)
    conversation = terminal_text(record.conversation_id or "-")
    return (
        f"{stamp}  {action:<28} {record.outcome:<20} {status!s:>4} "
        f"{record.duration_ms:>9.1f} ms  conv={conversation}  id={terminal_text(record.id)}"
    )


def _emit(record: ExecutionRecord, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json_line(record.to_dict()) + "\n")
    else:
        sys.stdout.write(format_line(record) + "\n")
    sys.stdout.flush()


async def show_logs(
    database: str | None,
    filters: Mapping[str, Any],
    *,
    limit: int = 50,
    as_json: bool = False,
    follow: bool = False,
) -> None:
    """Print up to ``limit`` matching records; with ``follow``, keep printing new ones."""
    engine = create_engine(database or DEFAULT_DATABASE)
    await migrate(engine)
    store = LogStore(engine)
    try:
        records, _ = await store.query(**filters, limit=limit)
        for record in records:
            _emit(record, as_json)
        seen = {r.id for r in records}
        newest = records[0].id if records else ""
        while follow:
            await asyncio.sleep(FOLLOW_INTERVAL_S)
            fresh, _ = await store.query(**filters, limit=1000)
            new = [r for r in fresh if r.id > newest and r.id not in seen]
            for record in reversed(new):  # oldest of the new ones first, like `tail -f`
                _emit(record, as_json)
                seen.add(record.id)
            if new:
                newest = new[0].id
    finally:
        await engine.dispose()
