"""axe-core on every dashboard page: no serious or critical accessibility violation.

Each page is checked as an operator reaches it: loaded with its real CSP, and, for pages whose
content a script adds (the Playground's transcript, forms and lead rows), in that state too.
To check a new page, add a :class:`Screen` to :data:`SCREENS`.

Without axe-core (``npm ci --prefix tests/browser``) the module is skipped, unless ``CI`` is
set, where that is a failure.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, cast

import pytest

from tests.browser.axe import assert_accessible, axe_missing
from tests.browser.conftest import LiveGateway, login, missing, open_playground, say

if (_reason := missing() or axe_missing()) is not None:
    if os.environ.get("CI"):
        pytest.fail(f"accessibility tests cannot run in CI: {_reason}", pytrace=False)
    pytest.skip(f"accessibility tests skipped: {_reason}", allow_module_level=True)

from playwright.sync_api import Browser, Page, expect

from examples.scripted_upstream import ScriptedUpstream

TOOL = "look_up_order"
"""A seeded action (the wizard tests create others; this one is there from the start)."""


@dataclass(frozen=True)
class Screen:
    """A page to check: where it is, and what to do there first (after it loaded)."""

    name: str
    path: Callable[[LiveGateway], str]
    prepare: Callable[[Page, LiveGateway, ScriptedUpstream], None] | None = None


def _record_id(gw: LiveGateway) -> str:
    """The id of a stored record of :data:`TOOL` (a test run makes one when there is none)."""
    store = gw.services.runtime.logstore

    async def newest() -> str | None:
        await store.flush()
        records, _ = await store.query(action=TOOL, limit=1)
        return records[0].id if records else None

    found = gw.run(newest())
    if found is None:
        gw.run(gw.services.admin.test_action(TOOL, {}, {"order_number": "A-00001"}, dry_run=False))
        found = gw.run(newest())
    assert found is not None
    return str(found)


def _chat_with_a_form(page: Page, gw: LiveGateway, upstream: ScriptedUpstream) -> None:
    """A transcript holding an execution (with its record link), a form and a lead row."""
    open_playground(page, "support")
    page.get_by_role("button", name="Add lead field").click()
    upstream.script(
        [
            {"tool_calls": [{"name": TOOL, "arguments": {"order_number": "A-00002"}}]},
            {"tool_calls": [{"name": "return_request", "arguments": {}, "id": "call_a11y"}]},
        ]
    )
    say(page, "where is my order, and can I return it?")
    expect(page.get_by_role("form", name="Start a return")).to_be_visible()
    expect(page.get_by_role("link", name=f"Log record of {TOOL}")).to_be_visible()


def _guardrail_report(page: Page, gw: LiveGateway, upstream: ScriptedUpstream) -> None:
    """The Guardrail check tab with two cases and the report of a run (a failing case too)."""
    cases = [
        {
            "message": "Where is order A-00003?",
            "expect": "call",
            "variables": {"lead.email": "a@b.c"},
        },
        {"message": "Where is my order?", "expect": "skip"},
    ]
    gw.run(gw.services.admin.guardrails.put_cases(TOOL, cases))
    page.reload()
    # Both answers are calls, whichever case gets which: the SKIP case is a false trigger.
    call = {"tool_calls": [{"name": TOOL, "arguments": {"order_number": "A-00003"}}]}
    upstream.script([call, call])
    page.get_by_role("button", name="Run check").click()
    expect(page.get_by_role("table", name=re.compile("^Result"))).to_be_visible()


def _form_submit_request(page: Page, gw: LiveGateway, upstream: ScriptedUpstream) -> None:
    """The wizard's Configure step for a form: its field rows and its submit request editor."""
    page.get_by_label("Form Collection", exact=True).check()
    page.get_by_role("button", name="Next").click()
    expect(page.get_by_label("Submit request URL", exact=True)).to_be_visible()


def _button_request_credentials(page: Page, gw: LiveGateway, upstream: ScriptedUpstream) -> None:
    """The Credentials step for a button that sends a request, with credential header rows."""
    page.get_by_label("Button Trigger", exact=True).check()
    page.get_by_role("button", name="Next").click()
    page.get_by_label("Send an HTTP request", exact=True).check()
    expect(page.get_by_label("Button request URL", exact=True)).to_be_visible()
    page.get_by_role("link", name="3. Credentials").click()
    page.get_by_label("Button request authentication", exact=True).select_option("headers")
    expect(page.get_by_label("Button request auth header 1 name", exact=True)).to_be_visible()


def _path(path: str) -> Callable[[LiveGateway], str]:
    return lambda _gw: path


def _with_records(path: str) -> Callable[[LiveGateway], str]:
    """``path``, once the log holds a record of :data:`TOOL` (so the tables and bars show)."""

    def made(gw: LiveGateway) -> str:
        _record_id(gw)
        return path

    return made


SCREENS = [
    Screen("overview", _path("/overview")),
    Screen("overview, 7 days", _with_records("/overview?window=7d")),
    Screen("overview with a bad window", _path("/overview?window=2h")),
    Screen("actions list", _path("/actions")),
    Screen("new action wizard", _path("/actions/new")),
    Screen("wizard, a form's submit request", _path("/actions/new"), _form_submit_request),
    Screen(
        "wizard, a button request's credentials", _path("/actions/new"), _button_request_credentials
    ),
    Screen("action page", _path(f"/actions/{TOOL}")),
    Screen("action logs tab", _path(f"/actions/{TOOL}/logs")),
    Screen("action guardrail check tab", _path(f"/actions/{TOOL}/guardrails")),
    Screen(
        "guardrail check with a report", _path(f"/actions/{TOOL}/guardrails"), _guardrail_report
    ),
    Screen("agents", _path("/agents")),
    Screen("agent page", _path("/agents/support")),
    Screen("secrets", _path("/secrets")),
    Screen("logs", _path("/logs")),
    Screen("log record", lambda gw: f"/logs/{_record_id(gw)}"),
    Screen("playground", _path("/playground")),
    Screen("playground with a chat", _path("/playground"), _chat_with_a_form),
    Screen("not found", _path("/no/such/page")),
]
"""Every page behind the login; add new pages here."""


@pytest.fixture(scope="module")
def signed_in(browser: Browser, live_gateway: LiveGateway) -> dict[str, Any]:
    """The cookies of one login, reused by every check (a login per page costs a second)."""
    context = browser.new_context(base_url=live_gateway.base_url)
    login(context.new_page(), live_gateway)
    state = context.storage_state()
    context.close()
    return cast(dict[str, Any], state)


@pytest.fixture
def page(browser: Browser, live_gateway: LiveGateway, signed_in: dict[str, Any]) -> Iterator[Page]:
    """A signed-in page, in a context of its own."""
    context = browser.new_context(base_url=live_gateway.base_url, storage_state=signed_in)
    page = context.new_page()
    page.set_default_timeout(10_000)
    yield page
    context.close()


@pytest.fixture
def anonymous(browser: Browser, live_gateway: LiveGateway) -> Iterator[Page]:
    context = browser.new_context(base_url=live_gateway.base_url)
    page = context.new_page()
    page.set_default_timeout(10_000)
    yield page
    context.close()


def test_the_login_page_is_accessible(anonymous: Page) -> None:
    anonymous.goto("/login")
    assert_accessible(anonymous, "login")
    anonymous.get_by_label("Admin token").fill("wrong")
    anonymous.get_by_role("button", name="Log in").click()
    expect(anonymous.get_by_role("alert")).to_be_visible()
    assert_accessible(anonymous, "login with an error")


@pytest.mark.parametrize("screen", SCREENS, ids=[s.name for s in SCREENS])
def test_every_dashboard_page_is_accessible(
    screen: Screen, page: Page, live_gateway: LiveGateway, scripted: ScriptedUpstream
) -> None:
    page.goto(screen.path(live_gateway))
    if screen.prepare is not None:
        screen.prepare(page, live_gateway, scripted)
    assert_accessible(page, screen.name)


def test_the_check_fails_on_a_serious_violation(page: Page) -> None:
    page.goto("/logs")
    # An unlabelled field and a nameless button, as a careless template change would add.
    page.evaluate(
        """() => {
      const main = document.querySelector("main");
      main.insertAdjacentHTML("beforeend", '<input id="bare"><button id="empty"></button>');
    }"""
    )
    with pytest.raises(AssertionError) as failed:
        assert_accessible(page, "logs with a bare input")
    report = str(failed.value)
    assert "label (critical)" in report and "button-name (critical)" in report
    assert '["#bare"]' in report and "dequeuniversity.com/rules/axe/" in report


# Every control of the page reached with Tab, in order, each with a visible focus ring.
_FOCUSABLE = """() => Array.from(document.querySelectorAll(
  "a[href], button:not([disabled]), input:not([type=hidden]):not([disabled]), select, textarea, " +
  "summary, [tabindex='0']"
)).filter((e) => e.getClientRects().length && getComputedStyle(e).visibility !== "hidden")
  .map((e) => e.id || e.getAttribute("href") || e.textContent.trim())"""
_FOCUSED = """() => {
  const e = document.activeElement;
  const style = getComputedStyle(e);
  return {key: e.id || e.getAttribute("href") || e.textContent.trim(),
          ring: style.outlineStyle !== "none" && parseFloat(style.outlineWidth) >= 2};
}"""


@pytest.mark.parametrize("path", ["/logs", "/playground", f"/actions/{TOOL}/guardrails"])
def test_every_control_is_reached_by_keyboard_with_a_visible_focus(page: Page, path: str) -> None:
    page.goto(path)
    if path == "/playground":
        expect(page.locator("#playground")).to_have_attribute("data-ready", "true")
    controls = page.evaluate(_FOCUSABLE)
    assert len(controls) > 8, controls
    reached: list[str] = []
    # A date field takes several Tabs (one per part: day, month, ...): count it once.
    for _ in range(len(controls) * 6):
        page.keyboard.press("Tab")
        focused = page.evaluate(_FOCUSED)
        assert focused["ring"], f"{focused['key']!r} has no visible focus ring on {path}"
        if not reached or reached[-1] != focused["key"]:
            reached.append(focused["key"])
        if len(reached) == len(controls):
            break
    assert reached == controls
