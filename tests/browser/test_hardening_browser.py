"""Hardening of the dashboard in a real browser (issue 12, items 21, 23 and 24).

21. The Playground chats with an agent that has client keys on the admin session (no key to
    paste), and sends lead fields, user id and channel, set before or during the chat.
23. An unknown dashboard URL shows a page with the sidebar.
24. The Playground's composer works only once its script does (Send is disabled until then),
    and the tests wait on that state.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import parse_qs

import pytest

from examples.scripted_upstream import ScriptedUpstream
from tests.browser.conftest import LiveGateway, missing, open_playground, say, shot

if missing() is not None:
    pytest.skip("browser tests skipped (see test_dashboard)", allow_module_level=True)

from playwright.sync_api import Page, expect


@pytest.fixture
def lead_action(live_gateway: LiveGateway) -> Iterator[str]:
    """An action whose request carries every conversation variable the Playground sets."""
    admin = live_gateway.services.admin
    query = (
        "email={{lead.email}}&name={{lead.name}}&plan={{lead.plan}}"
        "&user={{conversation.user_id}}&channel={{conversation.channel}}"
    )
    saved = live_gateway.run(
        admin.create_action(
            {"name": "Lead Echo", "url": f"{live_gateway.api.base_url}/echo/lead?{query}"}
        )
    )
    # Enabled explicitly: an earlier test's wizard may have given the agent a list of its own.
    live_gateway.run(admin.toggle("locked", saved["tool_name"], True))
    yield saved["tool_name"]
    live_gateway.run(admin.delete_action(saved["tool_name"]))


def _fill_variables(page: Page, extra: tuple[str, str] | None = None, **values: str) -> None:
    """Fill the named variables; ``extra`` is the first "Other lead fields" row (name, value)."""
    labels = {"email": "Lead email", "name": "Lead name", "user": "User id", "channel": "Channel"}
    for key, value in values.items():
        page.get_by_label(labels[key], exact=True).fill(value)
    if extra is not None:
        if page.get_by_label("Lead field 1 Name").count() == 0:
            page.get_by_role("button", name="Add lead field").click()
        page.get_by_label("Lead field 1 Name").fill(extra[0])
        page.get_by_label("Lead field 1 Value").fill(extra[1])


def test_playground_chats_with_a_keyed_agent_and_sends_conversation_variables(
    page: Page, live_gateway: LiveGateway, scripted: ScriptedUpstream, lead_action: str
) -> None:
    open_playground(page, "locked")
    expect(page.get_by_label("Client key")).to_have_count(0)  # nothing to paste
    _fill_variables(
        page, ("plan", "pro"), email="jane@example.com", name="Jane", user="u-7", channel="web"
    )
    call = {"tool_calls": [{"name": lead_action, "arguments": {}}]}
    scripted.script([call, {"content": "Hello Jane."}])
    say(page, "who am I?")
    expect(page.get_by_text("Hello Jane.")).to_be_visible()
    expect(page.get_by_text(f"{lead_action}: success (200)")).to_have_count(1)
    assert parse_qs(live_gateway.api.last().query_string) == {
        "email": ["jane@example.com"],
        "name": ["Jane"],
        "plan": ["pro"],
        "user": ["u-7"],
        "channel": ["web"],
    }
    shot(page, "playground-variables")

    # Changed during the chat: the next message carries the new values.
    _fill_variables(page, ("plan", "team"), email="sam@example.com", channel="email")
    scripted.script([call, {"content": "Hello Sam."}])
    say(page, "and now?")
    expect(page.get_by_text("Hello Sam.")).to_be_visible()
    expect(page.get_by_text(f"{lead_action}: success (200)")).to_have_count(2)
    assert parse_qs(live_gateway.api.last().query_string) == {
        "email": ["sam@example.com"],
        "name": ["Jane"],
        "plan": ["team"],
        "user": ["u-7"],
        "channel": ["email"],
    }

    # A value without a name is refused in the page; nothing is sent.
    sent = len(scripted.requests)
    _fill_variables(page, ("", "orphan"))
    say(page, "one more")
    expect(page.get_by_role("status")).to_have_text(
        "Error: Other lead fields: field 1 has a value but no name"
    )
    assert len(scripted.requests) == sent


def test_unknown_dashboard_url_shows_a_page_with_the_sidebar(page: Page) -> None:
    response = page.goto("/no/such/page")
    assert response is not None and response.status == 404
    expect(page.get_by_role("heading", name="Page not found")).to_be_visible()
    sidebar = page.get_by_role("navigation", name="Main")
    expect(sidebar.get_by_role("link", name="Custom Actions")).to_be_visible()
    shot(page, "not-found")
    sidebar.get_by_role("link", name="Agents").click()
    expect(page.get_by_role("heading", name="Agents")).to_be_visible()


def test_playground_send_waits_for_its_script(page: Page) -> None:
    # Without its script the page cannot send anything: the composer's buttons start disabled.
    page.route("**/static/playground.js", lambda route: route.fulfill(body="", status=200))
    page.goto("/playground")
    expect(page.get_by_role("button", name="Send")).to_be_disabled()
    expect(page.get_by_role("button", name="New conversation")).to_be_disabled()
    page.unroute("**/static/playground.js")
    open_playground(page)
    expect(page.get_by_role("button", name="Send")).to_be_enabled()
