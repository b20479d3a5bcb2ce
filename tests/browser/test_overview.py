"""The Overview in a real browser: the landing page after login, its numbers and charts changing
with traffic sent through the Playground, the window links, and its layout at 1,400 and 420 px.

The test makes its traffic under an action of its own, so records other tests left on the shared
gateway only show in the totals, which are compared before and after.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from examples.scripted_upstream import ScriptedUpstream
from tests.browser.conftest import LiveGateway, missing, open_playground, say, shot

if missing() is not None:
    pytest.skip("browser tests skipped (see test_dashboard)", allow_module_level=True)

from playwright.sync_api import Page, expect

from gateway.stores.logs import new_record


@pytest.fixture
def tracked(live_gateway: LiveGateway) -> Iterator[str]:
    """An order lookup of this test's own, enabled on the support agent."""
    admin = live_gateway.services.admin
    definition = {
        "name": f"Track {uuid4().hex[:8]}",
        "url": f"{live_gateway.api.base_url}/echo/orders/{{{{args.order}}}}",
        "parameters": {"order": {"type": "string", "required": True}},
    }
    saved = live_gateway.run(admin.create_action(definition))
    live_gateway.run(admin.toggle("support", saved["tool_name"], True))
    yield saved["tool_name"]
    live_gateway.run(admin.delete_action(saved["tool_name"]))


def _number(page: Page, name: str) -> int:
    return int((page.locator(f"#total-{name}").text_content() or "").replace(",", ""))


def _no_sideways_scroll(page: Page) -> None:
    sizes = page.evaluate(
        """() => {
          const doc = document.documentElement, main = document.querySelector("main");
          return {doc: [doc.scrollWidth, doc.clientWidth],
                  main: [main.scrollWidth, main.clientWidth]};
        }"""
    )
    assert sizes["doc"][0] <= sizes["doc"][1], sizes
    assert sizes["main"][0] <= sizes["main"][1], sizes


def test_the_overview_counts_traffic_sent_through_the_proxy(
    page: Page, scripted: ScriptedUpstream, tracked: str
) -> None:
    # Logging in landed here, with the Overview marked in the sidebar.
    assert page.url.endswith("/overview")
    nav = page.get_by_role("navigation", name="Main")
    expect(nav.get_by_role("link", name="Overview")).to_have_attribute("aria-current", "page")
    page.get_by_role("link", name="Last 1 hour").click()
    expect(page.get_by_role("link", name="Last 1 hour")).to_have_attribute("aria-current", "page")
    before, refused_before = _number(page, "executions"), _number(page, "refusals")
    actions = page.get_by_role("table", name="Executions per action")
    expect(actions.get_by_role("row", name=tracked)).to_have_count(0)
    chart = page.get_by_role("img", name="Executions per minute (UTC)")
    expect(chart).to_be_visible()
    described = chart.locator("desc").text_content()

    open_playground(page, "support")
    scripted.script(
        [
            {"tool_calls": [{"name": tracked, "arguments": {"order": "A-1"}}]},
            {"tool_calls": [{"name": tracked, "arguments": {"order": 7}}]},  # not a string
            {"content": "Your order A-1 is on its way."},
        ]
    )
    say(page, "where is order A-1?")
    expect(page.get_by_text("Your order A-1 is on its way.")).to_be_visible()

    page.goto("/overview?window=1h")
    expect(page.locator("#total-executions")).to_have_text(f"{before + 2:,}")
    assert _number(page, "refusals") == refused_before + 1
    row = page.get_by_role("table", name="Executions per action").get_by_role("row", name=tracked)
    expect(row.locator("td[data-label=Executions]")).to_have_text("2")
    expect(row.locator("td[data-label='Success rate']")).to_have_text("50.0 %")
    expect(row.locator("td[data-label=Refusals]")).to_have_text("1")
    expect(row.locator("td[data-label=Injected]")).to_have_text("100.0 %")
    expect(row.locator("td[data-label=p95]")).to_contain_text(" ms")
    # The charts changed too: the bars name the action, the series counts the success.
    bars = page.get_by_role("img", name="Executions per action")
    expect(bars).to_contain_text(tracked)
    series = page.get_by_role("img", name="Executions per minute (UTC)")
    expect(series.locator("desc")).not_to_have_text(described or "")
    expect(series.locator("desc")).to_contain_text(f"{refused_before + 1:,} refusals in all")
    refusals = page.get_by_role("table", name="Refusals by reason")
    expect(refusals.get_by_role("row", name="rejected invalid call")).to_be_visible()
    shot(page, "overview")

    # The per-action link opens that action's records.
    row.get_by_role("link", name=tracked).click()
    expect(page.locator("table.logs tbody tr")).to_have_count(2)


def test_a_bad_window_is_named_and_the_page_fits_1400_and_420_px(
    page: Page, live_gateway: LiveGateway
) -> None:
    long = "a_lookup_named_long_enough_to_push_a_narrow_layout_sideways_" * 2
    store = live_gateway.services.runtime.logstore
    store.submit(
        new_record(action=long, outcome="success", agent_id="support", request={}, duration_ms=80)
    )
    # A week of traffic for one more action: one record every 2 hours, a few failing.
    week = f"weekly_{uuid4().hex[:6]}"
    now = datetime.now(UTC)
    for i in range(84):
        record = new_record(
            action=week,
            outcome="http_error" if i % 7 == 0 else "success",
            agent_id="sales",
            request={},
            duration_ms=40.0 + i,
        )
        store.submit(dataclasses.replace(record, timestamp=now - timedelta(hours=2 * i + 1)))
    page.goto("/overview?window=2h")
    expect(page.get_by_role("alert")).to_have_text("unknown window '2h': use one of 1h, 24h, 7d")
    page.goto("/overview?window=7d")
    expect(page.get_by_role("img", name="Executions per 6 hours (UTC)")).to_be_visible()
    row = page.get_by_role("table", name="Executions per action").get_by_role("row", name=week)
    expect(row.locator("td[data-label=Executions]")).to_have_text("84")
    expect(row.locator("td[data-label='Success rate']")).to_have_text("85.7 %")  # 72 of 84
    # The week's records fill the slots of the series table, 3 a slot (6 h / 2 h).
    page.get_by_text("Executions per 6 hours as a table").click()
    slots = page.get_by_role("table", name="Executions per 6 hours").locator("tbody tr")
    expect(slots).to_have_count(29)
    page.set_viewport_size({"width": 1400, "height": 900})
    _no_sideways_scroll(page)
    shot(page, "overview-7d-1400")

    page.set_viewport_size({"width": 420, "height": 900})
    _no_sideways_scroll(page)
    # The bars fit; the time series keeps a readable size in a box that scrolls by keyboard.
    for chart in page.locator(".chart-pair svg.chart").all():
        box = chart.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 420
    scroller = page.get_by_role("group", name="Executions over time")
    box = scroller.bounding_box()
    assert box is not None and box["x"] + box["width"] <= 420
    assert scroller.evaluate("e => e.scrollWidth > e.clientWidth")
    scroller.focus()
    page.keyboard.press("ArrowRight")
    page.wait_for_function("() => document.querySelector('.chart-scroll').scrollLeft > 0")
    # The tables become cards, each cell labelled.
    cell = page.locator("table.stats td[data-label=Executions]").first
    expect(page.locator("table.stats tbody tr").first).to_have_css("display", "block")
    label = cell.evaluate("e => getComputedStyle(e, '::before').content")
    assert label == '"Executions"'
    page.get_by_label("Agent", exact=True).select_option("support")
    page.get_by_role("button", name="Show").click()
    assert page.url.endswith("/overview?window=7d&agent=support")
    expect(page.get_by_label("Agent", exact=True)).to_have_value("support")
    shot(page, "overview-420")
