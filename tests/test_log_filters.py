"""The Logs pages' filter form (gateway.admin.dashboard.log_filters): query string to filter."""

from __future__ import annotations

from datetime import UTC, datetime

from starlette.datastructures import QueryParams

from gateway.admin.dashboard.log_filters import read_log_form
from gateway.stores.log_queries import LogFilter


def test_every_field_reaches_the_filter_and_links_keep_them() -> None:
    params = QueryParams(
        "action=look_up_order&agent=support&outcome=rejected&conversation_id=c1"
        "&from=2026-12-07T14:00&to=2026-12-07T14:30&cursor=abc&unknown=x"
    )
    form = read_log_form(params)
    assert form.error is None
    assert form.where == LogFilter(
        action="look_up_order",
        agent="support",
        outcome="rejected",
        conversation_id="c1",
        since=datetime(2026, 12, 7, 14, 0, tzinfo=UTC),
        until=datetime(2026, 12, 7, 14, 31, tzinfo=UTC),  # "To" keeps its whole minute
    )
    link = form.link("/logs", cursor="next")
    assert link == (
        "/logs?action=look_up_order&agent=support&outcome=rejected&conversation_id=c1"
        "&from=2026-12-07T14%3A00&to=2026-12-07T14%3A30&cursor=next"
    )


def test_empty_fields_do_not_filter_and_an_actions_tab_fixes_the_action() -> None:
    assert read_log_form(QueryParams("action=&agent=  &outcome=")).where == LogFilter()
    tab = read_log_form(QueryParams("action=other&outcome=success"), action="look_up_order")
    assert tab.where == LogFilter(action="look_up_order", outcome="success")
    assert tab.link("/actions/look_up_order/logs") == "/actions/look_up_order/logs?outcome=success"


def test_to_with_seconds_keeps_that_second() -> None:
    form = read_log_form(QueryParams("to=2026-12-07T14:30:15"))
    assert form.where.until == datetime(2026, 12, 7, 14, 30, 16, tzinfo=UTC)


def test_unusable_fields_are_named_and_nothing_is_queried() -> None:
    cases = {
        "from=yesterday": "From: 'yesterday' is not a date and time",
        "to=2026-13-01T00:00": "To: '2026-13-01T00:00' is not a date and time",
        "outcome=exploded": "Outcome: 'exploded' is not one of success, http_error",
        "agent=a%00b": "Agent: contains a NUL character",
    }
    for query, message in cases.items():
        form = read_log_form(QueryParams(query))
        assert form.error is not None and form.error.startswith(message), (query, form.error)
        assert form.values  # shown back in the form, so the operator can correct it
