"""The ``execution_hours`` table: the execution log summed per UTC hour, agent and action.

The Overview's statistics over a day or a week would otherwise read every record of the
window (a million of them is seconds of work on SQLite, which aggregates by sorting). Instead
the log writer adds each record to its hour's row in the same transaction that stores it
(:func:`contributions`), and the statistics read whole hours from here and only the window's
first, partial hour from the log itself (:mod:`gateway.stores.log_stats`).

One row per ``(hour, agent_id, action)`` (``agent_id`` ``''`` for records without an agent)
holds counters only, so concurrent writers (replicas on PostgreSQL) add to them with one atomic
upsert each, in key order so two batches never wait on each other in a circle:

- ``n_<outcome>``: records per outcome;
- ``r_<reason>``: refusals per named reason (:data:`~.outcome_groups.REASON_PREFIXES`);
- ``injected``: executions (not ``pending_confirmation``) whose result reached the model;
- ``d0`` .. ``d137``: durations of the calls that reached the API, per bucket of
  :mod:`gateway.stores.durations`.

A record stored again (``mark_injected`` upserts it) first takes its stored version off its
hour. The columns follow :mod:`.outcome_groups` and :mod:`.durations`: changing either means
a migration that rebuilds the table (:func:`backfill`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Integer,
    MetaData,
    String,
    Table,
    cast,
    func,
    insert,
    select,
)
from sqlalchemy.types import TypeEngine

from gateway.stores.durations import OVERFLOW, bucket_expression, bucket_of
from gateway.stores.outcome_groups import NAMED_REASONS, OUTCOME_NAMES, SENT, reason_case, reason_of

__all__ = [
    "BUCKET_COLUMNS",
    "KEY_COLUMNS",
    "VALUE_COLUMNS",
    "Key",
    "backfill",
    "contributions",
    "define_table",
    "hour_of",
]

BUCKET_COLUMNS = tuple(f"d{k}" for k in range(OVERFLOW + 1))
COUNT_COLUMNS = tuple(f"n_{outcome}" for outcome in OUTCOME_NAMES)
REASON_COLUMNS = tuple(f"r_{reason}" for reason in NAMED_REASONS)
VALUE_COLUMNS = (*COUNT_COLUMNS, *REASON_COLUMNS, "injected", *BUCKET_COLUMNS)
KEY_COLUMNS = ("hour", "agent_id", "action")

Key = tuple[datetime, str, str]
"""``(hour, agent_id or '', action)``."""


def define_table(meta: MetaData, stamp: TypeEngine[datetime]) -> Table:
    """Add the ``execution_hours`` table to ``meta`` (``stamp``: the UTC datetime type)."""
    return Table(
        "execution_hours",
        meta,
        Column("hour", stamp, primary_key=True),
        Column("agent_id", String(255), primary_key=True),
        Column("action", String(255), primary_key=True),
        *(Column(name, Integer, nullable=False, server_default="0") for name in VALUE_COLUMNS),
    )


def hour_of(moment: datetime) -> datetime:
    """The start of the UTC hour holding ``moment`` (naive is UTC)."""
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return moment.replace(minute=0, second=0, microsecond=0)


def _add(totals: dict[Key, dict[str, int]], row: Mapping[Any, Any], sign: int, n: int = 1) -> None:
    key = (hour_of(row["timestamp"]), row["agent_id"] or "", row["action"])
    counts = totals.setdefault(key, {})
    outcome = row["outcome"]

    def bump(name: str, by: int) -> None:
        counts[name] = counts.get(name, 0) + sign * by

    bump(f"n_{outcome}", n)
    # A backfill's groups carry their reason, bucket and injected count; a record, its fields.
    grouped = "bucket" in row
    reason = row["reason"] if grouped else reason_of(outcome, row["error"])
    if reason is not None:
        bump(f"r_{reason}", n)
    injected = int(row["injected_n"]) if grouped else int(bool(row["injected"]))
    if outcome != "pending_confirmation" and injected:
        bump("injected", injected)
    if outcome in SENT:
        bump(f"d{row['bucket'] if grouped else bucket_of(row['duration_ms'])}", n)


def contributions(
    stored: Iterable[Mapping[Any, Any]], new: Iterable[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """The upsert parameters that move ``stored`` records' counts to their ``new`` versions.

    Args:
        stored: The versions already in the log (taken off their hours).
        new: The records being written (``timestamp``, ``agent_id``, ``action``, ``outcome``,
            ``error``, ``duration_ms``, ``injected``).

    Returns:
        One parameter set per changed row, every value column included, sorted by key.
    """
    totals: dict[Key, dict[str, int]] = {}
    for row in stored:
        _add(totals, row, -1)
    for row in new:
        _add(totals, row, +1)
    return [
        {"hour": key[0], "agent_id": key[1], "action": key[2]}
        | {name: counts.get(name, 0) for name in VALUE_COLUMNS}
        for key, counts in sorted(totals.items())
        if any(counts.values())
    ]


def _hour_expression(connection: Connection, stamp: Any) -> Any:
    if connection.dialect.name == "postgresql":
        return func.date_trunc("hour", stamp, "UTC")
    # SQLite keeps UTC text "YYYY-MM-DD HH:MM:SS.ffffff"; the hour is its first 13 characters.
    return func.substr(stamp, 1, 13).concat(":00:00.000000")


def backfill(connection: Connection, executions: Table, hours: Table) -> int:
    """Rebuild ``hours`` from every record in ``executions``; returns the rows written.

    The database groups the records by hour, agent, action, outcome, reason and duration
    bucket; the (far fewer) groups are summed into rows here.
    """
    t = executions
    hour = _hour_expression(connection, t.c.timestamp).label("hour")
    agent = func.coalesce(t.c.agent_id, "").label("agent_id")
    reason = reason_case(t.c.outcome, t.c.error).label("reason")
    bucket = bucket_expression(t.c.duration_ms).label("bucket")
    keys = (hour, agent, t.c.action, t.c.outcome, reason, bucket)
    statement = select(
        *keys, func.count().label("n"), func.sum(cast(t.c.injected, Integer)).label("injected_n")
    ).group_by(*keys)
    totals: dict[Key, dict[str, int]] = {}
    for row in connection.execute(statement).mappings():
        stamp = row["hour"]
        if not isinstance(stamp, datetime):
            stamp = datetime.strptime(str(stamp)[:13], "%Y-%m-%d %H")
        values = {**row, "timestamp": stamp}
        _add(totals, values, +1, n=int(row["n"]))
    rows = [
        {"hour": key[0], "agent_id": key[1], "action": key[2]}
        | {name: counts.get(name, 0) for name in VALUE_COLUMNS}
        for key, counts in sorted(totals.items())
    ]
    connection.execute(hours.delete())
    for start in range(0, len(rows), 1000):
        connection.execute(insert(hours), rows[start : start + 1000])
    return len(rows)
