"""Execution statistics over a recent window, aggregated by the database (the Overview page).

Whole hours come from ``execution_hours`` (:mod:`gateway.stores.hourly_stats`: the log summed
per hour, agent and action as it is written), so a week of a million records is a few
thousand rows to add up. The window's first, partial hour, and the whole of a 1-hour window
(whose time series is per minute), come from the log itself, in three ``GROUP BY`` queries:

1. per agent, action, outcome and duration bucket: the count and how many were injected
   (durations bucketed by :func:`gateway.stores.durations.bucket_expression`);
2. per minute (or hour) and outcome: the count, for the time series;
3. refusals per named reason (read off their ``error`` text).

Both give the same numbers: exact counts, and p50/p95 from the same duration buckets, within
:data:`~gateway.stores.durations.RELATIVE_ERROR`. Outcomes are grouped as
:mod:`gateway.stores.outcome_groups` says: ``pending_confirmation`` is counted apart and left
out of executions and rates; percentiles are over the calls that reached the API.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, get_args

from sqlalchemy import Integer, Select, cast, func, literal, select, type_coerce
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.stores.db import UTCDateTime, execution_hours, executions
from gateway.stores.durations import bucket_expression, merge, percentile
from gateway.stores.hourly_stats import BUCKET_COLUMNS, VALUE_COLUMNS, hour_of
from gateway.stores.log_queries import LogFilter
from gateway.stores.logs import Outcome
from gateway.stores.outcome_groups import (
    FAILURES,
    NAMED_REASONS,
    OTHER_REASON,
    OUTCOME_NAMES,
    REASON_PREFIXES,
    REFUSALS,
    SENT,
    reason_case,
)

__all__ = [
    "WINDOWS",
    "Group",
    "Overview",
    "Refusal",
    "Slot",
    "Window",
    "compute_overview",
    "parse_window",
]

Window = Literal["1h", "24h", "7d"]
"""The windows the Overview offers."""
DEFAULT_WINDOW: Window = "24h"


@dataclass(frozen=True, slots=True)
class _Span:
    length: timedelta
    slot: timedelta
    """Width of one point of the time series."""
    grain: Literal["minute", "hour"]
    """What the database groups by (slots are whole multiples of it)."""


WINDOWS: dict[Window, _Span] = {
    "1h": _Span(timedelta(hours=1), timedelta(minutes=1), "minute"),
    "24h": _Span(timedelta(hours=24), timedelta(hours=1), "hour"),
    "7d": _Span(timedelta(days=7), timedelta(hours=6), "hour"),
}


def parse_window(text: str | None) -> Window:
    """The window a query string names (the default, 24 h, when empty).

    Raises:
        ValueError: Naming the value and the windows there are.
    """
    if not text:
        return DEFAULT_WINDOW
    for window in get_args(Window):
        if text == window:
            return window  # type: ignore[no-any-return]
    raise ValueError(f"unknown window {text!r}: use one of {', '.join(WINDOWS)}")


@dataclass(slots=True)
class Group:
    """The numbers of one agent, one action, or everything in the window."""

    key: str | None
    """The agent id or tool name (None: the totals, or records without an agent)."""
    executions: int = 0
    successes: int = 0
    failures: int = 0
    refusals: int = 0
    pending: int = 0
    """``pending_confirmation`` records (not counted in ``executions``)."""
    injected: int = 0
    """Executions whose result reached the model."""
    p50_ms: float | None = None
    p95_ms: float | None = None
    outcomes: dict[str, int] = field(default_factory=dict)
    """Records per outcome (``pending_confirmation`` included)."""

    @property
    def success_rate(self) -> float | None:
        """Successes per execution (None without executions)."""
        return self.successes / self.executions if self.executions else None

    @property
    def injected_share(self) -> float | None:
        """Injected executions per execution (None without executions)."""
        return self.injected / self.executions if self.executions else None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["success_rate"] = self.success_rate
        data["injected_share"] = self.injected_share
        return data


@dataclass(frozen=True, slots=True)
class Slot:
    """One point of the time series: what started in ``[start, start + slot)``."""

    start: datetime
    successes: int = 0
    failures: int = 0
    refusals: int = 0


@dataclass(frozen=True, slots=True)
class Refusal:
    """Refusals of one outcome and reason (see :mod:`gateway.stores.outcome_groups`)."""

    outcome: Outcome
    reason: str
    count: int


@dataclass(frozen=True, slots=True)
class Overview:
    """Everything the Overview page and ``GET /api/stats`` show for one window."""

    window: Window
    since: datetime
    until: datetime
    agent: str | None
    totals: Group
    per_agent: list[Group]
    per_action: list[Group]
    series: list[Slot]
    slot_seconds: int
    refusals: list[Refusal]

    def to_dict(self) -> dict[str, Any]:
        """The JSON answer of ``GET /api/stats``."""
        return {
            "window": self.window,
            "since": _iso(self.since),
            "until": _iso(self.until),
            "agent": self.agent,
            "totals": self.totals.to_dict(),
            "per_agent": [g.to_dict() for g in self.per_agent],
            "per_action": [g.to_dict() for g in self.per_action],
            "series": {
                "slot_seconds": self.slot_seconds,
                "points": [{**asdict(s), "start": _iso(s.start)} for s in self.series],
            },
            "refusals": [asdict(r) for r in self.refusals],
        }


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# --- the log's own records (a partial hour, or a 1-hour window) ----------------------------

Point = tuple[datetime, int, int, int]
"""A database slot's (start, successes, failures, refusals)."""


async def _breakdown(connection: AsyncConnection, where: LogFilter) -> list[Any]:
    t = executions
    bucket = bucket_expression(t.c.duration_ms).label("bucket")
    statement = select(
        t.c.agent_id,
        t.c.action,
        t.c.outcome,
        bucket,
        func.count().label("n"),
        func.sum(cast(t.c.injected, Integer)).label("injected"),
    ).group_by(t.c.agent_id, t.c.action, t.c.outcome, bucket)
    return list(await connection.execute(where.apply(statement)))


def _slot_of(grain: Literal["minute", "hour"], dialect: str) -> Any:
    stamp = executions.c.timestamp
    if dialect == "postgresql":
        return type_coerce(func.date_trunc(grain, stamp, "UTC"), UTCDateTime())
    # SQLite stores UTC text, "YYYY-MM-DD HH:MM:SS.ffffff": its prefix is the minute or hour.
    return func.substr(stamp, 1, 16 if grain == "minute" else 13)


def _parse_slot(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    text = str(value)
    layout = "%Y-%m-%d %H:%M" if len(text) > 13 else "%Y-%m-%d %H"
    return datetime.strptime(text, layout).replace(tzinfo=UTC)


async def _series(
    connection: AsyncConnection, where: LogFilter, grain: Literal["minute", "hour"]
) -> list[Point]:
    slot = _slot_of(grain, connection.dialect.name).label("slot")
    statement = select(slot, executions.c.outcome, func.count()).group_by(
        slot, executions.c.outcome
    )
    points: list[Point] = []
    for start, outcome, n in await connection.execute(where.apply(statement)):
        moment = _parse_slot(start)
        if outcome == "success":
            points.append((moment, n, 0, 0))
        elif outcome in FAILURES:
            points.append((moment, 0, n, 0))
        elif outcome in REFUSALS:
            points.append((moment, 0, 0, n))
    return points


async def _reasons(connection: AsyncConnection, where: LogFilter) -> dict[str, int]:
    t = executions
    reason = reason_case(t.c.outcome, t.c.error).label("reason")
    statement = (
        select(reason, func.count()).where(t.c.outcome.in_(list(REASON_PREFIXES))).group_by(reason)
    )
    rows = await connection.execute(where.apply(statement))
    return {name: n for name, n in rows if name is not None}


# --- whole hours, from execution_hours ---------------------------------------------------------


def _hours_where(statement: Select[Any], first_hour: datetime, agent: str | None) -> Select[Any]:
    statement = statement.where(execution_hours.c.hour >= literal(first_hour, UTCDateTime()))
    if agent is not None:
        statement = statement.where(execution_hours.c.agent_id == agent)
    return statement


async def _hour_rows(
    connection: AsyncConnection, first_hour: datetime, agent: str | None
) -> list[Any]:
    h = execution_hours
    sums = [func.sum(h.c[name]).label(name) for name in VALUE_COLUMNS]
    statement = select(h.c.agent_id, h.c.action, *sums).group_by(h.c.agent_id, h.c.action)
    result = await connection.execute(_hours_where(statement, first_hour, agent))
    return list(result.mappings())


async def _hour_series(
    connection: AsyncConnection, first_hour: datetime, agent: str | None
) -> list[Point]:
    h = execution_hours

    def total(outcomes: Iterable[str]) -> Any:
        return func.sum(sum((h.c[f"n_{o}"] for o in sorted(outcomes)), literal(0)))

    statement = select(h.c.hour, total({"success"}), total(FAILURES), total(REFUSALS)).group_by(
        h.c.hour
    )
    rows = await connection.execute(_hours_where(statement, first_hour, agent))
    return [(_parse_slot(start), int(s), int(f), int(r)) for start, s, f, r in rows]


# --- summing up ------------------------------------------------------------------------------


@dataclass(slots=True)
class _Tally:
    outcomes: dict[str, int] = field(default_factory=dict)
    injected: int = 0
    histogram: dict[int, int] = field(default_factory=dict)

    def add(self, outcome: str, bucket: int, n: int, injected: int) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + n
        if outcome != "pending_confirmation":  # not an execution, so not in its shares
            self.injected += injected
        if outcome in SENT:
            self.histogram[bucket] = self.histogram.get(bucket, 0) + n

    def add_hours(self, row: Mapping[str, Any]) -> None:
        for outcome in OUTCOME_NAMES:
            if n := int(row[f"n_{outcome}"]):
                self.outcomes[outcome] = self.outcomes.get(outcome, 0) + n
        self.injected += int(row["injected"])
        for bucket, name in enumerate(BUCKET_COLUMNS):
            if n := int(row[name]):
                self.histogram[bucket] = self.histogram.get(bucket, 0) + n

    def group(self, key: str | None) -> Group:
        o = self.outcomes
        successes = o.get("success", 0)
        failures = sum(o.get(x, 0) for x in FAILURES)
        refusals = sum(o.get(x, 0) for x in REFUSALS)
        return Group(
            key=key,
            executions=successes + failures + refusals,
            successes=successes,
            failures=failures,
            refusals=refusals,
            pending=o.get("pending_confirmation", 0),
            injected=self.injected,
            p50_ms=percentile(self.histogram, 0.50),
            p95_ms=percentile(self.histogram, 0.95),
            outcomes={k: v for k, v in sorted(o.items()) if v},
        )


def _groups(tallies: Mapping[str | None, _Tally]) -> list[Group]:
    groups = [tally.group(key) for key, tally in tallies.items()]
    return sorted((g for g in groups if g.outcomes), key=lambda g: (-g.executions, g.key or ""))


def _total(tallies: Iterable[_Tally]) -> _Tally:
    total = _Tally()
    for tally in tallies:
        for outcome, n in tally.outcomes.items():
            total.outcomes[outcome] = total.outcomes.get(outcome, 0) + n
        total.injected += tally.injected
        total.histogram = merge([total.histogram, tally.histogram])
    return total


def _fold(points: list[Point], since: datetime, until: datetime, slot: timedelta) -> list[Slot]:
    """The database's minutes or hours folded into the window's slots, empty ones included."""
    width = slot.total_seconds()
    first = datetime.fromtimestamp(since.timestamp() // width * width, UTC)
    count = int((until - first).total_seconds() // width) + 1
    tallies = [[0, 0, 0] for _ in range(count)]
    for start, *kinds in points:
        index = min(max(int((start - first).total_seconds() // width), 0), count - 1)
        for i, n in enumerate(kinds):
            tallies[index][i] += n
    return [
        Slot(first + i * slot, successes=s, failures=f, refusals=r)
        for i, (s, f, r) in enumerate(tallies)
    ]


def _refusals(total: _Tally, named: Mapping[str, int]) -> list[Refusal]:
    """Refusals per outcome and reason: the named ones, and the rest under the outcome's."""
    found = []
    for outcome in sorted(REFUSALS):
        left = total.outcomes.get(outcome, 0)
        for reason, _ in REASON_PREFIXES.get(outcome, ()):
            if n := named.get(reason, 0):
                found.append(Refusal(outcome, reason, n))  # type: ignore[arg-type]
                left -= n
        if left:
            found.append(Refusal(outcome, OTHER_REASON[outcome], left))  # type: ignore[arg-type]
    return sorted(found, key=lambda r: (-r.count, r.outcome, r.reason))


def _first_whole_hour(since: datetime) -> datetime:
    start = hour_of(since)
    return start if start == since else start + timedelta(hours=1)


async def compute_overview(
    engine: AsyncEngine,
    window: Window = DEFAULT_WINDOW,
    *,
    agent: str | None = None,
    now: datetime | None = None,
) -> Overview:
    """The Overview's numbers for the ``window`` up to ``now`` (default: the current time).

    Args:
        engine: The (migrated) database holding the ``executions`` table.
        window: One of :data:`WINDOWS`.
        agent: Only this agent's records (None: every record, tests included).
        now: The end of the window (aware).
    """
    span = WINDOWS[window]
    until = (now or datetime.now(UTC)).astimezone(UTC)
    since = until - span.length
    # A per-minute series needs the records; hourly slots take whole hours from the sums.
    first_hour = None if span.grain == "minute" else _first_whole_hour(since)
    where = LogFilter(agent=agent, since=since, until=first_hour)
    by_agent: dict[str | None, _Tally] = {}
    by_action: dict[str | None, _Tally] = {}
    async with engine.connect() as connection:
        breakdown = await _breakdown(connection, where)
        points = await _series(connection, where, span.grain)
        named = await _reasons(connection, where)
        hours = [] if first_hour is None else await _hour_rows(connection, first_hour, agent)
        if first_hour is not None:
            points += await _hour_series(connection, first_hour, agent)
    for agent_id, action, outcome, bucket, n, injected in breakdown:
        for tallies, key in ((by_agent, agent_id), (by_action, action)):
            tallies.setdefault(key, _Tally()).add(outcome, int(bucket), int(n), int(injected))
    for row in hours:
        agent_key = row["agent_id"] or None
        by_agent.setdefault(agent_key, _Tally()).add_hours(row)
        by_action.setdefault(row["action"], _Tally()).add_hours(row)
        for reason in NAMED_REASONS:
            named[reason] = named.get(reason, 0) + int(row[f"r_{reason}"])
    total = _total(by_action.values())
    return Overview(
        window=window,
        since=since,
        until=until,
        agent=agent,
        totals=total.group(None),
        per_agent=_groups(by_agent),
        per_action=_groups(by_action),
        series=_fold(points, since, until, span.slot),
        slot_seconds=int(span.slot.total_seconds()),
        refusals=_refusals(total, named),
    )
