"""The Logs page (filters, a record's page, the JSON lines download, its layout at 1,400 and 420
px) and the Playground's conversation variables and inline executions, in a real browser.

Each test makes the records it looks at, under an action of its own, so the order of the test
modules sharing the gateway does not matter.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs
from uuid import uuid4

import pytest

from examples.scripted_upstream import ScriptedUpstream
from tests.browser.conftest import LiveGateway, missing, open_playground, say, shot

if missing() is not None:
    pytest.skip("browser tests skipped (see test_dashboard)", allow_module_level=True)

from playwright.sync_api import Browser, Page, expect

from gateway.stores.logs import ExecutionRecord, new_record


@pytest.fixture
def lookup(live_gateway: LiveGateway) -> Iterator[str]:
    """An action whose URL needs ``{{lead.email}}``, enabled on the support agent."""
    admin = live_gateway.services.admin
    name = f"Lead Lookup {uuid4().hex[:8]}"
    url = f"{live_gateway.api.base_url}/echo/lead-lookup?email={{{{lead.email}}}}"
    saved = live_gateway.run(admin.create_action({"name": name, "url": url}))
    live_gateway.run(admin.toggle("support", saved["tool_name"], True))
    yield saved["tool_name"]
    live_gateway.run(admin.delete_action(saved["tool_name"]))


def _records(gw: LiveGateway, **filters: str) -> list[ExecutionRecord]:
    store = gw.services.runtime.logstore

    async def query() -> list[ExecutionRecord]:
        await store.flush()
        return (await store.query(limit=1000, **filters))[0]

    result: list[ExecutionRecord] = gw.run(query())
    return result


def _test_run(gw: LiveGateway, tool: str, email: str | None) -> None:
    variables = {"lead": {"email": email}} if email else {}
    gw.run(gw.services.admin.test_action(tool, variables, {}, dry_run=False))


def test_playground_with_a_lead_email_links_each_execution_to_its_record(
    page: Page, live_gateway: LiveGateway, scripted: ScriptedUpstream, lookup: str
) -> None:
    open_playground(page, "support")
    page.get_by_label("Lead email", exact=True).fill("jane@example.com")
    page.get_by_label("Channel", exact=True).fill("web")
    scripted.script([{"tool_calls": [{"name": lookup, "arguments": {}}]}, {"content": "Found."}])
    say(page, "what is on my account?")
    expect(page.get_by_text("Found.")).to_be_visible()
    assert parse_qs(live_gateway.api.last().query_string) == {"email": ["jane@example.com"]}

    execution = page.locator("#transcript li.execution")
    expect(execution).to_have_count(1)
    expect(execution).to_contain_text(f"{lookup}: success (200)")
    expect(execution).to_contain_text(" ms")
    conversation = page.locator("#pg-conversation").text_content() or ""
    (record,) = _records(live_gateway, action=lookup, conversation_id=conversation)
    link = execution.get_by_role("link", name=f"Log record of {lookup}")
    expect(link).to_have_attribute("href", f"/logs/{record.id}")
    shot(page, "playground-lead-email")

    link.click()
    expect(page.get_by_role("heading", name="Log record")).to_be_visible()
    details = page.locator("dl.record")
    expect(details).to_contain_text(record.id)
    expect(details).to_contain_text("success")
    expect(details).to_contain_text("support")
    expect(page.locator("pre").first).to_contain_text("email=jane%40example.com")
    shot(page, "log-record")
    # The conversation links to the logs of that conversation.
    page.get_by_role("link", name=f"Logs of conversation {conversation}").click()
    expect(page.locator("table.logs tbody tr")).to_have_count(1)
    expect(page.get_by_label("Conversation id")).to_have_value(conversation)


def test_filter_the_logs_by_action_and_outcome_and_open_a_record(
    page: Page, live_gateway: LiveGateway, lookup: str
) -> None:
    for email in ("a@example.com", None, "b@example.com", None, None):
        _test_run(live_gateway, lookup, email)
    page.goto("/logs")
    page.get_by_label("Action").select_option(lookup)
    page.get_by_label("Outcome").select_option("rejected")
    page.get_by_role("button", name="Filter").click()
    rows = page.locator("table.logs tbody tr")
    expected = _records(live_gateway, action=lookup, outcome="rejected")
    assert len(expected) == 3
    expect(rows).to_have_count(3)
    for row in rows.all():
        expect(row.locator("td[data-label=Outcome] .outcome")).to_have_text("rejected")
        expect(row.locator("td[data-label=Action]")).to_have_text(lookup)
    expect(page.get_by_label("Action")).to_have_value(lookup)  # the form keeps the filter
    shot(page, "logs-filtered")

    rows.first.get_by_role("link", name="Details").click()
    expect(page).to_have_url(f"{live_gateway.base_url}/logs/{expected[0].id}")
    details = page.locator("dl.record")
    expect(details).to_contain_text("rejected")
    expect(details).to_contain_text("lead.email")  # the error names the missing value

    # A malformed date is named, and nothing is listed rather than everything.
    page.goto("/logs?from=yesterday")
    expect(page.get_by_role("alert")).to_contain_text("From: 'yesterday' is not a date and time")
    expect(page.locator("table.logs tbody")).to_have_text("No executions.")


def test_the_download_holds_exactly_the_filtered_records(
    page: Page, browser: Browser, live_gateway: LiveGateway, lookup: str
) -> None:
    for email in ("c@example.com", None, "d@example.com"):
        _test_run(live_gateway, lookup, email)
    page.goto("/logs")
    page.get_by_label("Action").select_option(lookup)
    page.get_by_label("Outcome").select_option("success")
    page.get_by_role("button", name="Filter").click()
    with page.expect_download() as info:
        page.get_by_role("link", name="Download JSON lines").click()
    download = info.value
    assert download.suggested_filename == "actiongate-logs.jsonl"
    lines = Path(download.path()).read_text(encoding="utf-8").splitlines()
    got = [json.loads(line) for line in lines]
    expected = _records(live_gateway, action=lookup, outcome="success")
    assert len(expected) == 2
    assert got == [r.to_dict() for r in expected]  # every field, newest first, nothing else

    # The download needs the admin session: another browser is sent to the login.
    other = browser.new_context(base_url=live_gateway.base_url)
    try:
        anonymous = other.request.get(f"/logs.jsonl?action={lookup}", max_redirects=0)
        assert anonymous.status == 303 and anonymous.headers["location"] == "/login"
    finally:
        other.close()
    bad = page.request.get("/logs.jsonl?from=yesterday")
    assert bad.status == 400 and "From: 'yesterday' is not a date and time" in bad.text()


def _no_sideways_scroll(page: Page) -> None:
    sizes = page.evaluate(
        """() => {
          const doc = document.documentElement, main = document.querySelector("main");
          return {doc: [doc.scrollWidth, doc.clientWidth],
                  main: [main.scrollWidth, main.clientWidth]};
        }"""
    )
    assert sizes["doc"][0] <= sizes["doc"][1], sizes
    assert sizes["main"][0] <= sizes["main"][1], sizes  # nor does the table scroll inside main


def test_the_logs_fit_at_1400_px_and_stack_at_420_px(
    page: Page, live_gateway: LiveGateway, lookup: str
) -> None:
    long = "x" * 400
    record = new_record(
        action=lookup,
        outcome="http_error",
        agent_id="support",
        conversation_id=f"conv-{long}",
        request={"method": "GET", "url": f"https://api.example.com/{long}?q={long}"},
        response={"status_code": 500, "body": long, "truncated": False},
        error=f"the API said {long}",
    )
    store = live_gateway.services.runtime.logstore
    store.submit(record)
    page.set_viewport_size({"width": 1400, "height": 900})
    page.goto(f"/logs?action={lookup}")
    expect(page.locator("table.logs tbody tr")).to_have_count(1)
    _no_sideways_scroll(page)
    shot(page, "logs-1400")

    page.set_viewport_size({"width": 420, "height": 900})
    expect(page.locator("table.logs tbody tr")).to_have_css("display", "block")
    _no_sideways_scroll(page)
    # Each cell is labelled in the card, and the Details link is still one tap away.
    outcome = page.locator("table.logs td[data-label=Outcome]")
    label = outcome.evaluate("e => getComputedStyle(e, '::before').content")
    assert label == '"Outcome"'
    box = page.get_by_role("link", name="Details").bounding_box()
    assert box is not None and box["x"] + box["width"] <= 420
    shot(page, "logs-420")

    page.get_by_role("link", name="Details").click()
    expect(page.locator("dl.record")).to_contain_text(f"conv-{long}")  # in full here
    _no_sideways_scroll(page)
    shot(page, "log-record-420")


def test_the_filtered_logs_page_with_the_cursor(
    page: Page, live_gateway: LiveGateway, lookup: str
) -> None:
    store = live_gateway.services.runtime.logstore
    for i in range(55):
        outcome = "success" if i % 5 else "timeout"
        store.submit(new_record(action=lookup, outcome=outcome, request={"method": "GET"}))
    expected = [r.id for r in _records(live_gateway, action=lookup, outcome="success")]
    assert len(expected) == 44
    page.goto(f"/logs?action={lookup}&outcome=success")

    def shown() -> list[str]:
        links = page.locator("table.logs tbody").get_by_role("link", name="Details")
        return [
            (href or "").removeprefix("/logs/")
            for href in (link.get_attribute("href") for link in links.all())
        ]

    expect(page.locator("table.logs tbody tr")).to_have_count(44)  # one page holds 50
    assert shown() == expected
    page.goto(f"/logs?action={lookup}")
    expect(page.locator("table.logs tbody tr")).to_have_count(50)
    first = shown()
    page.get_by_role("link", name="Next page").click()
    expect(page.locator("table.logs tbody tr")).to_have_count(5)
    expect(page.get_by_label("Action")).to_have_value(lookup)  # the filter goes along
    expect(page.get_by_role("link", name="Next page")).to_have_count(0)
    assert first + shown() == [r.id for r in _records(live_gateway, action=lookup)]
    page.get_by_role("link", name="First page").click()
    expect(page.locator("table.logs tbody tr")).to_have_count(50)
