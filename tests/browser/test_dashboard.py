"""The dashboard in a real browser: log in, create an action, test it, enable it, use it.

The tests run in file order against one gateway (each builds on what the previous one created).
They need Playwright and Debian's chromium; without them the module is skipped, unless ``CI`` is
set, where a missing browser is a failure.
"""

from __future__ import annotations

import json
import os
import re
from urllib.parse import parse_qs

import pytest

from tests.browser.conftest import LiveGateway, login, missing, open_playground, shot
from tests.support.gateway import CRM_SECRET

if (_reason := missing()) is not None:
    if os.environ.get("CI"):
        pytest.fail(f"browser tests cannot run in CI: {_reason}", pytrace=False)
    pytest.skip(f"browser tests skipped: {_reason}", allow_module_level=True)

from playwright.sync_api import Browser, Dialog, Page, expect

NEW_TOOL = "find_customer"


def test_login_requires_the_token_and_csrf(browser: Browser, live_gateway: LiveGateway) -> None:
    context = browser.new_context(base_url=live_gateway.base_url)
    page = context.new_page()
    page.goto("/actions")
    assert page.url.endswith("/login")
    page.get_by_label("Admin token").fill("wrong")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_have_text("Wrong admin token.")
    shot(page, "login")

    # A POST without the form's CSRF token is refused, even with the session cookie.
    login(page, live_gateway)
    cookies = {c["name"]: c for c in context.cookies()}
    session = cookies["actiongate_session"]
    assert session["httpOnly"] and session["sameSite"] == "Strict"
    r = context.request.post("/agents/support/actions", form={"action": "look_up_order"})
    assert r.status == 403
    r = context.request.post(
        "/agents/support/actions", form={"action": "look_up_order", "csrf": "forged"}
    )
    assert r.status == 403
    shot(page, "actions")
    page.get_by_role("button", name="Log out").click()
    page.goto("/actions")
    assert page.url.endswith("/login")
    context.close()


def test_create_http_action_with_the_wizard(page: Page, live_gateway: LiveGateway) -> None:
    page.get_by_role("link", name="Custom Actions").click()
    page.get_by_role("link", name="Create Action").click()
    page.get_by_label("HTTP Request", exact=True).check()
    shot(page, "wizard-1-type")
    page.get_by_role("button", name="Next").click()

    page.get_by_label("Name", exact=True).fill("Find Customer")
    page.get_by_label("URL", exact=True).fill(
        f"{live_gateway.api.base_url}/echo/customers?email={{{{lead.email}}}}"
    )
    page.get_by_label("Header 1 name", exact=True).fill("Authorization")
    page.get_by_label("Header 1 value", exact=True).fill("Bearer {{secrets.CRM}}")
    # A mistake first: the server's error shows, and nothing typed is lost.
    page.get_by_label("Body (JSON)", exact=True).fill("{not json")
    shot(page, "wizard-2-configure")
    page.get_by_role("button", name="Next").click()
    page.get_by_role("button", name="Next").click()
    page.get_by_role("textbox", name="When not to use").fill(
        "Do not use without the customer's email address."
    )
    page.get_by_role("button", name="Next").click()
    page.get_by_role("button", name="Test", exact=True).click()
    expect(page.locator("#err-body")).to_contain_text("Body: not valid JSON")
    expect(page.get_by_label("URL", exact=True)).to_have_value(re.compile(r"\{\{lead\.email\}\}$"))
    page.get_by_label("Body (JSON)", exact=True).fill("")
    page.get_by_role("link", name="5. Test").click()
    page.get_by_label("lead.email", exact=True).fill("jane@example.com")

    page.get_by_role("button", name="Test", exact=True).click()
    result = page.get_by_role("region", name="Test result")
    expect(result).to_contain_text("Result: success")
    expect(page.get_by_label("Request", exact=True)).to_contain_text(
        '"Authorization": "[REDACTED]"'
    )
    expect(page.get_by_label("Response body", exact=True)).to_contain_text(
        "email=jane%40example.com"
    )
    assert CRM_SECRET not in page.content()
    shot(page, "wizard-4-test")

    page.get_by_role("button", name="Next").click()
    expect(page.get_by_label("Support assistant")).not_to_be_checked()
    shot(page, "wizard-5-enable")
    page.get_by_role("button", name="Save action").click()
    expect(page.get_by_role("status")).to_have_text("Action created.")
    expect(page.get_by_label("Definition JSON")).to_contain_text('"tool_name": "find_customer"')
    shot(page, "action")
    page.get_by_role("link", name="Custom Actions").click()
    expect(page.get_by_role("row", name=re.compile("Find Customer"))).to_contain_text(
        "HTTP Request"
    )


def test_test_panel_shows_the_redacted_request(page: Page) -> None:
    page.goto(f"/actions/{NEW_TOOL}")
    page.get_by_label("lead.email", exact=True).fill("sam@example.com")
    page.get_by_label("Dry run").check()
    page.get_by_role("button", name="Run test").click()
    expect(page.get_by_role("region", name="Test result")).to_contain_text("Result: dry_run")
    page.get_by_label("Dry run").uncheck()
    page.get_by_role("button", name="Run test").click()
    expect(page.get_by_role("region", name="Test result")).to_contain_text("Result: success")
    expect(page.get_by_label("Request", exact=True)).to_contain_text("[REDACTED]")
    expect(page.get_by_label("Response body", exact=True)).to_contain_text(
        "email=sam%40example.com"
    )
    expect(page.get_by_label("What the model receives")).to_contain_text("sam%40example.com")
    assert CRM_SECRET not in page.content()
    shot(page, "action-test")


def test_enable_the_action_on_an_agent(page: Page, live_gateway: LiveGateway) -> None:
    page.get_by_role("link", name="Agents").click()
    shot(page, "agents")
    page.get_by_role("link", name="support").click()
    toggle = page.get_by_label("Find Customer")
    expect(toggle).not_to_be_checked()
    toggle.check()
    page.get_by_role("button", name="Save actions").click()
    expect(page.get_by_role("status")).to_have_text("Actions saved.")
    expect(page.get_by_label("Find Customer")).to_be_checked()
    shot(page, "agent")
    assert NEW_TOOL in live_gateway.services.admin.get_agent("support")["enabled_actions"]


def _say(page: Page, text: str) -> None:
    page.get_by_label("Message").fill(text)
    page.get_by_role("button", name="Send").click()


def test_playground_form_then_action(page: Page, live_gateway: LiveGateway) -> None:
    up = live_gateway.upstream
    page.get_by_role("link", name="Playground").click()
    page.get_by_label("Agent").select_option("support")
    page.get_by_role("button", name="Choose agent").click()
    expect(page.get_by_label("Agent")).to_have_value("support")
    expect(page.locator("#playground[data-agent=support]")).to_have_attribute("data-ready", "true")

    up.script(
        [
            {
                "tool_calls": [
                    {
                        "name": "return_request",
                        "arguments": {"order_number": "A-12345"},
                        "id": "call_f",
                    }
                ]
            }
        ]
    )
    _say(page, "I want to return something")
    form = page.get_by_role("form", name="Start a return")
    expect(form.get_by_label("order_number")).to_have_value("A-12345")
    form.get_by_label("email").fill("not-an-email")
    form.get_by_role("button", name="Submit").click()
    expect(form.get_by_role("alert").filter(has_text="email")).to_be_visible()
    shot(page, "playground-form-error")

    up.script([{"content": "Your return is started."}])
    form.get_by_label("email").fill("jane@example.com")
    form.get_by_role("button", name="Submit").click()
    expect(page.get_by_text("Your return is started.")).to_be_visible()
    assert json.loads(live_gateway.api.last().body)["email"] == "jane@example.com"

    up.script(
        [{"tool_calls": [{"name": NEW_TOOL, "arguments": {}}]}, {"content": "Found your account."}]
    )
    _say(page, "and my account?")
    expect(page.get_by_text("Found your account.")).to_be_visible()
    expect(page.get_by_text(f"{NEW_TOOL}: success (200)")).to_be_visible()
    assert parse_qs(live_gateway.api.last().query_string) == {"email": ["jane@example.com"]}
    shot(page, "playground")


def test_action_logs_tab_lists_executions(page: Page) -> None:
    page.goto(f"/actions/{NEW_TOOL}")
    page.get_by_role("link", name="Logs", exact=True).last.click()
    table = page.locator("table.logs tbody")
    expect(table.get_by_role("row").filter(has_text=re.compile(r"^pg-|\bpg-"))).to_have_count(1)
    expect(table).to_contain_text("GET ")
    expect(table).to_contain_text("200")
    shot(page, "action-logs")
    page.get_by_role("link", name="Logs", exact=True).first.click()
    expect(page.get_by_role("heading", name="Logs")).to_be_visible()
    page.get_by_label("Action").select_option(NEW_TOOL)
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("table.logs tbody tr")).to_have_count(3)
    shot(page, "logs")


def test_hostile_customer_text_is_shown_as_text(page: Page, live_gateway: LiveGateway) -> None:
    dialogs: list[str] = []

    def on_dialog(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    hostile = "<script>alert(1)</script> <img src=x onerror=alert(2)> \x1b[31mred\x1b[0m \u202eevil"
    open_playground(page)
    live_gateway.upstream.script([{"content": f"You said: {hostile}"}])
    _say(page, hostile)
    expect(page.get_by_text("You said:", exact=False)).to_be_visible()
    transcript = page.get_by_role("list", name="Transcript")
    assert transcript.locator("script, img").count() == 0
    text = transcript.text_content() or ""
    # Markup stays text; the bidi override is shown as its escape instead of reordering.
    assert "<script>alert(1)</script>" in text and "\\u202eevil" in text
    assert "\u202e" not in text
    assert dialogs == []
    shot(page, "playground-hostile")
