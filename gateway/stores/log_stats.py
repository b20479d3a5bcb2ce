"""Execution statistics over a recent window, aggregated by the database (the Overview page).

Three queries, each one ``GROUP BY`` in SQL, so a window of a million records returns a few
thousand rows, never the records themselves:

1. per agent, action, outcome and duration bucket: the count and how many were injected
   (durations bucketed by :func:`gateway.stores.durations.bucket_expression`);
2. per time slot (a minute, or an hour) and outcome: the count, for the time series;
3. refusals whose reason is in their ``error`` text (``rejected`` and ``declined``), per reason.

Everything else (per agent, per action, totals, p50/p95, shares) is summed from those rows here.
The covering index of migration ``m006_stats_index`` serves all three; see the README for the
figures at a million records.

How outcomes count: ``success`` is a success; ``http_error``, ``timeout`` and
``connect_error`` are failures (the API was called); ``blocked``, ``rejected`` and
``declined`` are refusals (nothing was sent). ``pending_confirmation`` is a question to the
customer, not an execution: its answer is a record of its own (the run, or ``declined``), so it
is counted apart and left out of executions and rates. Percentiles are over the executions that
called the API (successes and failures), within :data:`~gateway.stores.durations.RELATIVE_ERROR`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, get_args

from sqlalchemy import Integer, case, cast, func, select, type_coerce
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.stores.db import UTCDateTime, executions
from gateway.stores.durations import bucket_expression, merge, percentile
from gateway.stores.log_queries import LogFilter
from gateway.stores.logs import Outcome

__all__ = [
    "FAILURES",
    "REASON_PREFIXES",
    "REFUSALS",
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

FAILURES: frozenset[Outcome] = frozenset({"http_error", "timeout", "connect_error"})
REFUSALS: frozenset[Outcome] = frozenset({"blocked", "rejected", "declined"})
_SENT = ("success", *sorted(FAILURES))

REASON_PREFIXES: dict[Outcome, tuple[tuple[str, str], ...]] = {
    "rejected": (
        ("rate_limited", "this conversation made "),
        ("circuit_open", "the API behind this action is failing right now"),
        ("concurrency_limit", "too many calls to this action are running at once"),
    ),
    "declined": (
        ("customer_declined", "the customer declined"),
        ("not_shown", "the confirmation could not be shown"),
    ),
}
"""How a refusal's ``error`` names its reason: (reason, the text it starts with). The texts are
the engine's (``engine/limits.py``, ``proxy/turns.py``; a test keeps them in step). Any other
``rejected`` is ``invalid_call`` (a missing value, bad arguments, an unknown tool); ``blocked``
is always ``egress_policy``."""
_OTHER_REASON: dict[str, str] = {"rejected": "invalid_call", "declined": "declined"}


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
    """Refusals of one outcome and reason (see :data:`REASON_PREFIXES`)."""

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


# --- the queries ----------------------------------------------------------------------------


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
) -> list[tuple[datetime, str, int]]:
    slot = _slot_of(grain, connection.dialect.name).label("slot")
    statement = select(slot, executions.c.outcome, func.count()).group_by(
        slot, executions.c.outcome
    )
    rows = await connection.execute(where.apply(statement))
    return [(_parse_slot(s), outcome, n) for s, outcome, n in rows]


async def _reasons(connection: AsyncConnection, where: LogFilter) -> list[Any]:
    t = executions
    whens = [
        (t.c.outcome == outcome) & t.c.error.startswith(prefix, autoescape=True)
        for outcome, pairs in REASON_PREFIXES.items()
        for _, prefix in pairs
    ]
    names = [reason for pairs in REASON_PREFIXES.values() for reason, _ in pairs]
    reason = case(*zip(whens, names, strict=True), else_=t.c.outcome).label("reason")
    statement = (
        select(t.c.outcome, reason, func.count())
        .where(t.c.outcome.in_(list(REASON_PREFIXES)))
        .group_by(t.c.outcome, reason)
    )
    return list(await connection.execute(where.apply(statement)))


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
        if outcome in _SENT:
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
            outcomes=dict(sorted(o.items())),
        )


def _groups(tallies: Mapping[str | None, _Tally]) -> list[Group]:
    groups = [tally.group(key) for key, tally in tallies.items()]
    return sorted(groups, key=lambda g: (-g.executions, g.key or ""))


def _total(tallies: Iterable[_Tally]) -> _Tally:
    total = _Tally()
    for tally in tallies:
        for outcome, n in tally.outcomes.items():
            total.outcomes[outcome] = total.outcomes.get(outcome, 0) + n
        total.injected += tally.injected
        total.histogram = merge([total.histogram, tally.histogram])
    return total


def _fold(
    points: list[tuple[datetime, str, int]], since: datetime, until: datetime, slot: timedelta
) -> list[Slot]:
    """The database's minutes or hours folded into the window's slots, empty ones included."""
    width = slot.total_seconds()
    first = datetime.fromtimestamp(since.timestamp() // width * width, UTC)
    count = int((until - first).total_seconds() // width) + 1
    tallies = [[0, 0, 0] for _ in range(count)]
    for start, outcome, n in points:
        index = min(max(int((start - first).total_seconds() // width), 0), count - 1)
        if outcome == "success":
            tallies[index][0] += n
        elif outcome in FAILURES:
            tallies[index][1] += n
        elif outcome in REFUSALS:
            tallies[index][2] += n
    return [
        Slot(first + i * slot, successes=s, failures=f, refusals=r)
        for i, (s, f, r) in enumerate(tallies)
    ]


def _refusals(breakdown: _Tally, reasons: list[Any]) -> list[Refusal]:
    found = [Refusal(outcome, reason, n) for outcome, reason, n in reasons]
    found = [Refusal(r.outcome, _OTHER_REASON.get(r.reason, r.reason), r.count) for r in found]
    blocked = breakdown.outcomes.get("blocked", 0)
    if blocked:
        found.append(Refusal("blocked", "egress_policy", blocked))
    return sorted(found, key=lambda r: (-r.count, r.outcome, r.reason))


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
    where = LogFilter(agent=agent, since=since)
    async with engine.connect() as connection:
        breakdown = await _breakdown(connection, where)
        points = await _series(connection, where, span.grain)
        reasons = await _reasons(connection, where)
    by_agent: dict[str | None, _Tally] = {}
    by_action: dict[str | None, _Tally] = {}
    for agent_id, action, outcome, bucket, n, injected in breakdown:
        for tallies, key in ((by_agent, agent_id), (by_action, action)):
            tallies.setdefault(key, _Tally()).add(outcome, int(bucket), int(n), int(injected))
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
        refusals=_refusals(total, reasons),
    )
