"""``actiongate logs``: print execution records, newest first, optionally following new ones."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Mapping
from typing import Any

from gateway.definitions.config import DEFAULT_DATABASE
from gateway.stores.db import create_engine, migrate
from gateway.stores.logs import ExecutionRecord, LogStore

__all__ = ["format_line", "show_logs"]

FOLLOW_INTERVAL_S = 1.0


def format_line(record: ExecutionRecord) -> str:
    """One human-readable line per record."""
    status = record.response["status_code"] if record.response else "-"
    stamp = record.to_dict()["timestamp"]
    return (
        f"{stamp}  {record.action:<28} {record.outcome:<20} {status!s:>4} "
        f"{record.duration_ms:>9.1f} ms  conv={record.conversation_id or '-'}  id={record.id}"
    )


def _emit(record: ExecutionRecord, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(record.to_dict(), ensure_ascii=False) + "\n")
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
