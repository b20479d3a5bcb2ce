"""The Overview page, the dashboard's landing page: how the actions did over a recent window.

``/overview?window=24h&agent=support`` shows, for the window (1 h, 24 h or 7 d; 24 h by
default) and optionally one agent: totals, executions per time slot split into successes,
failures and refusals, executions and p95 per action as bars, tables per action and per agent
(executions, success rate, p50/p95, the share injected into the conversation) and refusals by
outcome and reason. The numbers come from :func:`gateway.stores.log_stats.compute_overview`,
the same as ``GET /api/stats``; the charts are server-side SVG (:mod:`.charts`), each with the
same numbers in a table. An unknown window is a 400 page naming it.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import RedirectResponse, Response

from gateway.admin.dashboard.charts import Bar, Column, horizontal_bars, stacked_columns
from gateway.admin.dashboard.login_pages import LANDING
from gateway.admin.dashboard.pages import AdminSession, Dash, PageTable
from gateway.stores.log_stats import WINDOWS, Group, Overview, Slot, compute_overview, parse_window

__all__ = ["overview_view", "pages"]

pages = PageTable()

WINDOW_NAMES = {"1h": "1 hour", "24h": "24 hours", "7d": "7 days"}
_SLOT_NAMES = {60: "minute", 3600: "hour", 6 * 3600: "6 hours"}
_TICK_EVERY = {60: timedelta(minutes=10), 3600: timedelta(hours=3), 6 * 3600: timedelta(days=1)}
_BARS = 12
"""Actions shown in the bar charts (the tables list every one)."""
NO_AGENT = "(no agent: tests)"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f} %"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} ms" if value >= 10 else f"{value:.1f} ms"


def _row(group: Group, *, agent: bool = False) -> dict[str, Any]:
    key = group.key if group.key is not None else (NO_AGENT if agent else "")
    return {
        "key": key,
        "executions": f"{group.executions:,}",
        "successes": f"{group.successes:,}",
        "failures": f"{group.failures:,}",
        "refusals": f"{group.refusals:,}",
        "pending": f"{group.pending:,}",
        "success_rate": _percent(group.success_rate),
        "p50": _ms(group.p50_ms),
        "p95": _ms(group.p95_ms),
        "injected": _percent(group.injected_share),
    }


def _slot_label(slot: Slot, seconds: int) -> str:
    return slot.start.strftime("%Y-%m-%d %H:%M")


def _tick_label(slot: Slot, seconds: int) -> str:
    return slot.start.strftime("%a %d" if seconds >= 6 * 3600 else "%H:%M")


def _is_tick(slot: Slot, seconds: int) -> bool:
    every = _TICK_EVERY[seconds].total_seconds()
    return slot.start.timestamp() % every == 0


def _series_chart(stats: Overview) -> Any:
    seconds = stats.slot_seconds
    columns = [
        Column(
            label=_tick_label(s, seconds) if _is_tick(s, seconds) else _slot_label(s, seconds),
            values=(s.successes, s.failures, s.refusals),
            tick=_is_tick(s, seconds),
        )
        for s in stats.series
    ]
    totals = stats.totals
    busiest = max(stats.series, key=lambda s: s.successes + s.failures + s.refusals)
    most = busiest.successes + busiest.failures + busiest.refusals
    description = (
        f"Executions per {_SLOT_NAMES[seconds]} over the last {WINDOW_NAMES[stats.window]}: "
        f"{totals.successes:,} successes, {totals.failures:,} failures and "
        f"{totals.refusals:,} refusals in all"
        + (
            f"; the busiest slot, {_slot_label(busiest, seconds)} UTC, had {most:,}."
            if most
            else "."
        )
    )
    return stacked_columns(
        columns,
        series=("Successes", "Failures", "Refusals"),
        title=f"Executions per {_SLOT_NAMES[seconds]} (UTC)",
        description=description,
        y_label="executions",
    )


def _bar_charts(stats: Overview) -> tuple[Any, Any]:
    top = stats.per_action[:_BARS]
    counts = [Bar(g.key or "", g.executions, f"{g.executions:,}") for g in top]
    timed = sorted((g for g in top if g.p95_ms is not None), key=lambda g: -(g.p95_ms or 0))
    p95 = [Bar(g.key or "", g.p95_ms or 0.0, _ms(g.p95_ms)) for g in timed]

    def words(bars: list[Bar]) -> str:
        return "; ".join(f"{b.label} {b.text}" for b in bars) or "no executions"

    return (
        horizontal_bars(
            counts, title="Executions per action", description=f"Executions: {words(counts)}."
        ),
        horizontal_bars(
            p95, title="p95 duration per action (ms)", description=f"p95: {words(p95)}."
        ),
    )


def overview_view(stats: Overview) -> dict[str, Any]:
    """The page's numbers as text, and its charts, for :file:`templates/overview.html`."""
    executions_chart, p95_chart = _bar_charts(stats)
    seconds = stats.slot_seconds
    return {
        "totals": _row(stats.totals),
        "per_action": [_row(g) for g in stats.per_action],
        "per_agent": [_row(g, agent=True) for g in stats.per_agent],
        "refusals": [
            {"outcome": r.outcome, "reason": r.reason.replace("_", " "), "count": f"{r.count:,}"}
            for r in stats.refusals
        ],
        "series": [
            {
                "start": _slot_label(s, seconds),
                "successes": s.successes,
                "failures": s.failures,
                "refusals": s.refusals,
            }
            for s in stats.series
        ],
        "slot_name": _SLOT_NAMES[seconds],
        "series_chart": _series_chart(stats),
        "executions_chart": executions_chart,
        "p95_chart": p95_chart,
        "since": stats.since.strftime("%Y-%m-%d %H:%M"),
        "until": stats.until.strftime("%Y-%m-%d %H:%M"),
    }


def _link(window: str, agent: str | None) -> str:
    query = {"window": window, **({"agent": agent} if agent else {})}
    return f"/overview?{urlencode(query)}"


@pages.get("/")
async def home() -> Response:
    return RedirectResponse(LANDING, status_code=303)


@pages.get("/overview")
async def overview(request: Request, dash: Dash, session: AdminSession) -> Response:
    admin = await dash.admin(request)
    params = request.query_params
    agent = (params.get("agent") or "").strip() or None
    context: dict[str, Any] = {
        "agent": agent,
        "agent_ids": sorted(admin.workspace.agents),
        "windows": [],
        "window_names": WINDOW_NAMES,
    }
    try:
        window = parse_window(params.get("window"))
        if agent is not None and "\x00" in agent:
            raise ValueError("agent contains a NUL character")
    except ValueError as e:
        context["windows"] = [(w, _link(w, None), False) for w in WINDOWS]
        return dash.render(request, "overview.html", session, 400, error=str(e), **context)
    await admin.runtime.logstore.flush()
    stats = await compute_overview(admin.runtime.engine, window, agent=agent)
    context["windows"] = [(w, _link(w, agent), w == window) for w in WINDOWS]
    return dash.render(
        request,
        "overview.html",
        session,
        window=window,
        view=overview_view(stats),
        error=None,
        **context,
    )
