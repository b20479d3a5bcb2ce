"""The wizard's editors, variable picker, live preview and advanced view, and the per-variable
Test panel, in a real browser: an action is created with headers, arguments and a body using
only the editors, then run from its page; so are a form with a submit request and a button
with an HTTP request. The tests run in file order (the second runs what the first created);
the module deletes those actions when it is done.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser.conftest import ADMIN_TOKEN, LiveGateway, login, missing, shot
from tests.support.gateway import CRM_SECRET

if missing() is not None:
    pytest.skip("browser tests skipped (see test_dashboard)", allow_module_level=True)

from playwright.sync_api import Browser, Page, expect

TOOL = "order_lookup"
GUARDRAIL = "Never for refunds: send those to a human."
DESCRIPTION = "Look up one order of the customer's."
EDITED = "Look up one order of the customer's, by its number."
FORM_TOOL = "request_a_callback"
BUTTON_TOOL = "resend_the_invoice"


@pytest.fixture(scope="module", autouse=True)
def _cleanup(live_gateway: LiveGateway) -> Iterator[None]:
    yield
    admin = live_gateway.services.admin
    for tool in (TOOL, FORM_TOOL, BUTTON_TOOL):
        if any(a["tool_name"] == tool for a in admin.list_actions()):
            live_gateway.run(admin.delete_action(tool))


def _insert(page: Page, field: str, variable: str) -> None:
    """Put the cursor at the end of ``field``, then insert ``variable`` with the picker."""
    target = page.get_by_label(field, exact=True)
    target.click()
    target.press("End")
    page.get_by_label("Insert variable").select_option(variable)
    page.get_by_role("button", name="Insert", exact=True).click()


def _configure(page: Page, gw: LiveGateway) -> None:
    """Step 2 with the editors only: URL, a query row, two header rows, four arguments, a body."""
    page.get_by_label("Name", exact=True).fill("Order Lookup")
    page.get_by_label("Method", exact=True).select_option("POST")
    page.get_by_label("URL", exact=True).fill(f"{gw.api.base_url}/echo/orders/")
    page.get_by_label("Query 1 name", exact=True).fill("email")
    _insert(page, "Query 1 value", "lead.email")
    expect(page.get_by_label("Query 1 value", exact=True)).to_have_value("{{lead.email}}")
    page.get_by_label("Header 1 name", exact=True).fill("Authorization")
    page.get_by_label("Header 1 value", exact=True).fill("Bearer ")
    # Secrets are listed by name; their values never reach the page.
    _insert(page, "Header 1 value", "secrets.CRM")
    page.get_by_role("button", name="Add header").click()
    page.get_by_label("Header 2 name", exact=True).fill("Content-Type")
    page.get_by_label("Header 2 value", exact=True).fill("application/json")

    arguments = [
        ("order_id", "string", "The order number, e.g. A-17", True, ""),
        ("quantity", "integer", "How many items", False, ""),
        ("gift", "boolean", "Wrap it as a gift", False, ""),
        ("speed", "string", "Delivery speed", False, "slow, fast"),
    ]
    for n, (name, kind, description, required, allowed) in enumerate(arguments, start=1):
        if n > 1:
            page.get_by_role("button", name="Add argument").click()
        page.get_by_label(f"Argument {n} name", exact=True).fill(name)
        page.get_by_label(f"Argument {n} type", exact=True).select_option(kind)
        page.get_by_label(f"Argument {n} description", exact=True).fill(description)
        if required:
            page.get_by_label(f"Argument {n} required", exact=True).check()
        page.get_by_label(f"Argument {n} allowed values", exact=True).fill(allowed)
    # The picker offers the action's own arguments as soon as they are typed.
    _insert(page, "URL", "args.order_id")
    expect(page.get_by_label("URL", exact=True)).to_have_value(
        f"{gw.api.base_url}/echo/orders/{{{{args.order_id}}}}"
    )

    body = page.get_by_label("Body (JSON)", exact=True)
    body.fill('{"qty": ')
    expect(page.locator("#body-check")).to_contain_text("Not valid JSON")
    expect(body).to_have_attribute("aria-invalid", "true")
    body.fill('{"qty": "{{args.quantity}}", "gift": "{{args.gift}}", "speed": "{{args.speed}}"}')
    expect(page.locator("#body-check")).to_have_text("Valid JSON.")


EXPECTED_PARAMETERS = {
    "order_id": {"type": "string", "description": "The order number, e.g. A-17", "required": True},
    "quantity": {"type": "integer", "description": "How many items"},
    "gift": {"type": "boolean", "description": "Wrap it as a gift"},
    "speed": {"type": "string", "description": "Delivery speed", "enum": ["slow", "fast"]},
}


def _advanced_round_trip(page: Page, gw: LiveGateway) -> None:
    """The advanced view shows the editors' definition; an edit there loads back into them."""
    page.get_by_text("Advanced: the raw definition").click()
    raw = page.get_by_label("Raw definition (JSON)")
    expect(raw).to_have_value(re.compile(re.escape(GUARDRAIL)))
    data = json.loads(raw.input_value())
    assert data["headers"] == {
        "Authorization": "Bearer {{secrets.CRM}}",
        "Content-Type": "application/json",
    }
    assert data["query"] == {"email": "{{lead.email}}"}
    assert data["parameters"] == EXPECTED_PARAMETERS
    assert data["body"] == {
        "qty": "{{args.quantity}}",
        "gift": "{{args.gift}}",
        "speed": "{{args.speed}}",
    }
    shot(page, "editors-advanced")
    raw.fill(json.dumps({**data, "description": EDITED}, indent=2))
    page.get_by_role("button", name="Load into editors").click()
    expect(page.get_by_label("Description", exact=True)).to_have_value(EDITED)
    expect(page.get_by_label("Header 2 name", exact=True)).to_have_value("Content-Type")
    expect(page.get_by_label("Argument 4 allowed values", exact=True)).to_have_value("slow, fast")
    expect(page.get_by_label("Argument 1 required", exact=True)).to_be_checked()
    expect(page.get_by_label("Query 1 value", exact=True)).to_have_value("{{lead.email}}")


def test_create_an_action_with_the_editors_only(page: Page, live_gateway: LiveGateway) -> None:
    page.goto("/actions/new")
    steps = page.get_by_role("navigation", name="Wizard steps")
    expect(steps.get_by_role("link", name="1. Type")).to_have_attribute("aria-current", "step")
    page.get_by_label("HTTP Request", exact=True).check()
    page.get_by_role("button", name="Next").click()
    expect(steps.get_by_role("link", name="2. Configure")).to_have_attribute("aria-current", "step")
    expect(steps.get_by_role("link", name="1. Type")).not_to_have_attribute("aria-current", "step")
    _configure(page, live_gateway)
    shot(page, "editors-2-configure")

    page.get_by_role("button", name="Next").click()
    expect(page.get_by_label("Authentication", exact=True)).to_have_value("none")
    shot(page, "editors-3-credentials")
    page.get_by_role("button", name="Next").click()
    page.get_by_label("Description", exact=True).fill(DESCRIPTION)
    page.get_by_role("textbox", name="When not to use").fill(GUARDRAIL)
    # The live preview is the tool description the model will read, guardrail included.
    described = page.get_by_label("Tool description")
    expect(described).to_have_text(f"{DESCRIPTION}\n\nWhen NOT to use: {GUARDRAIL}")
    expect(page.locator("#preview-name")).to_have_text(TOOL)
    expect(page.get_by_label("Arguments schema")).to_contain_text('"required": [\n    "order_id"')
    shot(page, "editors-4-describe")

    page.get_by_role("link", name="2. Configure").click()
    _advanced_round_trip(page, live_gateway)
    page.get_by_role("link", name="4. Describe").click()
    expect(described).to_have_text(f"{EDITED}\n\nWhen NOT to use: {GUARDRAIL}")

    page.get_by_role("link", name="5. Test").click()
    page.get_by_label("lead.email", exact=True).fill("jane@example.com")
    page.get_by_label("args.order_id", exact=True).fill("A-17")
    expect(page.get_by_label("args.quantity", exact=True)).to_have_attribute("type", "number")
    page.get_by_label("args.quantity", exact=True).fill("2")
    page.get_by_label("args.gift", exact=True).check()
    page.get_by_label("args.speed", exact=True).select_option("fast")
    page.get_by_label("Dry run").check()
    page.get_by_role("button", name="Test", exact=True).click()
    result = page.get_by_role("region", name="Test result")
    expect(result).to_contain_text("Result: dry_run")
    expect(page.get_by_label("Request", exact=True)).to_contain_text(
        '"Authorization": "[REDACTED]"'
    )
    expect(page.get_by_label("Request", exact=True)).to_contain_text(
        "/echo/orders/A-17?email=jane%40example.com"
    )
    expect(page.get_by_label("args.quantity", exact=True)).to_have_value("2")
    assert CRM_SECRET not in page.content()
    shot(page, "editors-5-test")

    page.get_by_role("link", name="6. Enable").click()
    page.get_by_role("button", name="Save action").click()
    expect(page.get_by_role("status")).to_have_text("Action created.")
    stored = live_gateway.services.admin.get_action(TOOL)
    assert stored["method"] == "POST" and stored["description"] == EDITED
    assert stored["parameters"] == {
        name: {"required": False, **p} for name, p in EXPECTED_PARAMETERS.items()
    }
    assert stored["headers"]["Authorization"] == "Bearer {{secrets.CRM}}"

    # The action page reads as a summary, variables marked, not as a JSON dump.
    summary = page.get_by_label("Definition summary")
    expect(summary.locator(".url code.var")).to_have_text(["{{args.order_id}}"])
    query = summary.get_by_role("table", name="Query parameters")
    expect(query.locator("code.var")).to_have_text(["{{lead.email}}"])
    expect(summary.get_by_role("table", name="Headers")).to_contain_text("Bearer {{secrets.CRM}}")
    expect(summary.get_by_role("table", name="Arguments").locator("tbody tr")).to_have_count(4)
    expect(summary.locator(".guardrail")).to_have_text(GUARDRAIL)
    expect(page.get_by_label("Definition JSON")).not_to_be_visible()
    assert CRM_SECRET not in page.content()
    shot(page, "editors-action-page")


def test_run_the_test_panel_through_its_fields(page: Page, live_gateway: LiveGateway) -> None:
    page.goto(f"/actions/{TOOL}")
    panel = page.locator("#test-form")
    expect(panel).to_have_attribute("data-ready", "true")
    names = panel.locator(".test-inputs label")
    expect(names).to_have_text(
        ["lead.email", "args.order_id", "args.quantity", "args.gift", "args.speed"]
    )
    expect(panel.get_by_label("args.order_id")).to_have_accessible_description(
        re.compile("required")
    )
    expect(panel.get_by_label("args.speed").locator("option")).to_have_text(
        ["(leave out)", "slow", "fast"]
    )
    panel.get_by_label("lead.email").fill("sam@example.com")
    panel.get_by_label("args.order_id").fill("B-2")
    panel.get_by_label("args.quantity").fill("3")
    panel.get_by_label("args.speed").select_option("slow")
    panel.get_by_role("button", name="Run test").click()

    result = page.get_by_role("region", name="Test result")
    expect(result).to_contain_text("Result: success")
    expect(result.locator("dd").first).to_have_text("200")
    expect(result.locator("dd").nth(1)).to_have_text(re.compile(r"^\d+$"))
    expect(page.get_by_label("Request", exact=True)).to_contain_text("[REDACTED]")
    expect(page.get_by_label("Response body", exact=True)).to_contain_text("/echo/orders/B-2")
    expect(page.get_by_label("What the model receives")).to_contain_text("email=sam%40example.com")
    sent = live_gateway.api.last()
    assert sent.path == "/echo/orders/B-2"
    # Typed from the schema: the number and the unticked box keep their JSON types.
    assert json.loads(sent.body) == {"qty": 3, "gift": False, "speed": "slow"}
    assert sent.headers["Authorization"] == f"Bearer {CRM_SECRET}"
    assert CRM_SECRET not in page.content()
    shot(page, "editors-test-panel")

    # The last values used come back on the next visit (kept in this browser).
    page.goto(f"/actions/{TOOL}")
    expect(panel).to_have_attribute("data-ready", "true")
    expect(panel.get_by_label("lead.email")).to_have_value("sam@example.com")
    expect(panel.get_by_label("args.quantity")).to_have_value("3")
    expect(panel.get_by_label("args.speed")).to_have_value("slow")


def test_an_edit_in_the_advanced_view_keeps_every_stored_setting(
    page: Page, live_gateway: LiveGateway
) -> None:
    admin = live_gateway.services.admin
    before = admin.get_action(TOOL)
    page.goto(f"/actions/{TOOL}/edit")
    page.get_by_text("Advanced: the raw definition").click()
    raw = page.get_by_label("Raw definition (JSON)")
    # The advanced view shows the whole definition, settings the editors do not show included.
    expect(raw).to_have_value(re.compile('"timeout_s": 10'))
    data = json.loads(raw.input_value())
    assert data["retries"] == 0 and data["confirm"] == "auto"
    raw.fill(json.dumps({**data, "timeout_s": 20}, indent=2))
    page.get_by_label("Test and save this raw definition instead of the editors").check()
    page.get_by_role("link", name="6. Enable").click()
    page.get_by_role("button", name="Save changes").click()
    expect(page.get_by_role("status")).to_have_text("Action saved.")
    after = admin.get_action(TOOL)
    assert after == {**before, "timeout_s": 20.0}


def _unlabelled(page: Page) -> list[str]:
    """The page's fields (hidden ones too) that have no label."""
    found: list[str] = page.evaluate(
        """() => Array.from(document.querySelectorAll(
                 'main input:not([type=hidden]), main select, main textarea'))
             .filter((el) => el.labels.length === 0).map((el) => el.id || el.name)"""
    )
    return found


def test_every_control_is_labelled_and_reachable_by_keyboard(page: Page) -> None:
    for path in ("/actions/new", f"/actions/{TOOL}", f"/actions/{TOOL}/edit"):
        page.goto(path)
        assert _unlabelled(page) == [], path
    page.goto("/actions/new")
    page.get_by_role("button", name="Next").focus()
    page.keyboard.press("Enter")
    page.get_by_label("Name", exact=True).focus()
    page.keyboard.press("Tab")
    focused = page.evaluate(
        "() => [document.activeElement.id, getComputedStyle(document.activeElement).outlineStyle]"
    )
    assert focused == ["method", "solid"]
    # Adding a row by keyboard moves the focus into the new row.
    page.get_by_role("button", name="Add header").focus()
    page.keyboard.press("Enter")
    expect(page.get_by_label("Header 2 name", exact=True)).to_be_focused()
    page.keyboard.press("Shift+Tab")
    expect(page.get_by_role("button", name="Remove header 1")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.get_by_label("Header 2 name", exact=True)).to_have_count(0)
    shot(page, "editors-keyboard")


def test_the_wizard_works_without_javascript(browser: Browser, live_gateway: LiveGateway) -> None:
    context = browser.new_context(base_url=live_gateway.base_url, java_script_enabled=False)
    page = context.new_page()
    page.set_default_timeout(10_000)
    try:
        login(page, live_gateway)
        page.goto("/actions/new")
        page.get_by_label("Name", exact=True).fill("No Script Probe")
        page.get_by_label("URL", exact=True).fill(f"{live_gateway.api.base_url}/echo/probe")
        page.get_by_label("Header 1 name", exact=True).fill("X-Probe")
        page.get_by_label("Header 1 value", exact=True).fill("1")
        page.get_by_role("textbox", name="When not to use").fill(GUARDRAIL)
        page.get_by_role("button", name="Add header").click()
        # The page came back from the server with a second, blank row and nothing lost.
        expect(page.get_by_label("Header 2 name", exact=True)).to_have_value("")
        expect(page.get_by_label("Header 1 name", exact=True)).to_have_value("X-Probe")
        expect(page.get_by_label("Name", exact=True)).to_have_value("No Script Probe")
        expect(page.get_by_label("Tool description")).to_have_text(
            f"No Script Probe.\n\nWhen NOT to use: {GUARDRAIL}"
        )
        # Enter in a field redisplays the page; it never saves.
        page.get_by_label("Name", exact=True).press("Enter")
        expect(page.get_by_label("Name", exact=True)).to_have_value("No Script Probe")
        page.get_by_label("Argument 1 name", exact=True).fill("n")
        page.get_by_label("Argument 1 allowed values", exact=True).fill("1, x")
        page.get_by_label("Argument 1 type", exact=True).select_option("integer")
        page.get_by_role("button", name="Save action").click()
        expect(page.locator("#err-parameters")).to_contain_text("Arguments, row 1 (n)")
        expect(page.get_by_label("Argument 1 allowed values", exact=True)).to_have_value("1, x")
        shot(page, "editors-no-script-error")
        tools = [a["tool_name"] for a in live_gateway.services.admin.list_actions()]
        assert "no_script_probe" not in tools
    finally:
        context.close()


def test_the_preview_endpoint_needs_the_form_token(page: Page) -> None:
    refused = page.request.post("/actions/preview", form={"name": "x"})
    assert refused.status == 403
    api = page.request.post(
        "/actions/preview",
        form={"name": "x"},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    assert api.status == 403


def _stored(page: Page, tool: str) -> dict[str, Any]:
    """The definition the admin API returns for ``tool``."""
    r = page.request.get(f"/api/actions/{tool}", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert r.ok, r.status
    data: dict[str, Any] = r.json()
    return data


def _save(page: Page, button: str, status: str) -> None:
    page.get_by_role("link", name="6. Enable").click()
    page.get_by_role("button", name=button).click()
    expect(page.get_by_role("status")).to_have_text(status)


def _run_test_panel(page: Page, tool: str, values: dict[str, str]) -> None:
    page.goto(f"/actions/{tool}")
    panel = page.locator("#test-form")
    expect(panel).to_have_attribute("data-ready", "true")
    for name, value in values.items():
        panel.get_by_label(name, exact=True).fill(value)
    panel.get_by_role("button", name="Run test").click()
    expect(page.get_by_role("region", name="Test result")).to_contain_text("Result: success")


def test_create_a_form_with_a_submit_request_using_the_editors_only(
    page: Page, live_gateway: LiveGateway
) -> None:
    api = live_gateway.api.base_url
    page.goto("/actions/new")
    page.get_by_label("Form Collection", exact=True).check()
    page.get_by_role("button", name="Next").click()
    page.get_by_label("Name", exact=True).fill("Request a Callback")
    page.get_by_label("Form title").fill("We call you back")
    page.get_by_label("Field 1 name", exact=True).fill("email")
    page.get_by_label("Field 1 type", exact=True).select_option("email")
    page.get_by_role("button", name="Add field").click()
    page.get_by_label("Field 2 name", exact=True).fill("phone")
    page.get_by_label("Field 2 type", exact=True).select_option("phone")
    # The HTTP action's editors are not on the page for a form; its submit request has its own.
    expect(page.get_by_label("Method", exact=True)).to_be_hidden()
    page.get_by_label("Submit request method", exact=True).select_option("POST")
    page.get_by_label("Submit request URL", exact=True).fill(f"{api}/echo/callbacks")
    page.get_by_label("Submit request query 1 name", exact=True).fill("phone")
    # The form's own fields are offered as {{form.NAME}} as soon as they are typed.
    _insert(page, "Submit request query 1 value", "form.phone")
    expect(page.get_by_label("Submit request query 1 value", exact=True)).to_have_value(
        "{{form.phone}}"
    )
    page.get_by_label("Submit request header 1 name", exact=True).fill("X-Source")
    page.get_by_label("Submit request header 1 value", exact=True).fill("chat")
    body = page.get_by_label("Submit request body (JSON)", exact=True)
    body.fill('{"email": ')
    expect(page.locator("#submit_body-check")).to_contain_text("Not valid JSON")
    body.fill('{"email": "{{form.email}}"}')
    expect(page.locator("#submit_body-check")).to_have_text("Valid JSON.")
    shot(page, "editors-form-submit")

    page.get_by_role("button", name="Next").click()
    page.get_by_label("Submit request authentication", exact=True).select_option("bearer")
    expect(page.get_by_label("Token", exact=True)).to_be_hidden()
    _insert(page, "Submit request token", "secrets.CRM")
    page.get_by_role("button", name="Next").click()
    page.get_by_label("Description", exact=True).fill("Ask for a callback.")
    _save(page, "Save action", "Action created.")

    submit = _stored(page, FORM_TOOL)["submit"]
    assert {k: submit[k] for k in ("method", "url", "headers", "query", "body", "auth")} == {
        "method": "POST",
        "url": f"{api}/echo/callbacks",
        "headers": {"X-Source": "chat"},
        "query": {"phone": "{{form.phone}}"},
        "body": {"email": "{{form.email}}"},
        "auth": {"type": "bearer", "token": "{{secrets.CRM}}"},
    }
    # The submit request as the customer's submission would send it, from the Test panel.
    _run_test_panel(page, FORM_TOOL, {"form.email": "jo@example.com", "form.phone": "+4912"})
    sent = live_gateway.api.last()
    assert (sent.method, sent.path, sent.query_string) == (
        "POST",
        "/echo/callbacks",
        "phone=%2B4912",
    )
    assert json.loads(sent.body) == {"email": "jo@example.com"}
    assert sent.headers["Authorization"] == f"Bearer {CRM_SECRET}"
    assert sent.headers["X-Source"] == "chat"
    assert CRM_SECRET not in page.content()


def test_create_a_button_with_an_http_request_using_the_editors_only(
    page: Page, live_gateway: LiveGateway
) -> None:
    api = live_gateway.api.base_url
    page.goto("/actions/new")
    page.get_by_label("Button Trigger", exact=True).check()
    page.get_by_role("button", name="Next").click()
    page.get_by_label("Name", exact=True).fill("Resend the Invoice")
    page.get_by_label("Button label").fill("Resend invoice")
    expect(page.get_by_label("Button request URL", exact=True)).to_be_hidden()
    page.get_by_label("Send an HTTP request", exact=True).check()
    expect(page.get_by_label("Navigate URL")).to_be_hidden()
    page.get_by_label("Button request method", exact=True).select_option("PUT")
    # A private address the egress policy refuses: saving names the field, on its step.
    page.get_by_label("Button request URL", exact=True).fill("http://10.20.30.40/invoices/resend")
    page.get_by_label("Button request header 1 name", exact=True).fill("Content-Type")
    page.get_by_label("Button request header 1 value", exact=True).fill("application/json")
    page.get_by_label("Button request body (JSON)", exact=True).fill('{"to": "{{lead.email}}"}')
    expect(page.locator("#button_body-check")).to_have_text("Valid JSON.")
    shot(page, "editors-button-request")

    page.get_by_role("button", name="Next").click()
    page.get_by_label("Button request authentication", exact=True).select_option("headers")
    page.get_by_label("Button request auth header 1 name", exact=True).fill("X-Billing-Token")
    _insert(page, "Button request auth header 1 value", "secrets.CRM")
    page.get_by_role("button", name="Next").click()
    page.get_by_label("Description", exact=True).fill("Send the invoice again.")
    page.get_by_role("link", name="6. Enable").click()
    page.get_by_role("button", name="Save action").click()
    expect(page.locator("#err-button_url")).to_contain_text("on_click.http.url")
    url = page.get_by_label("Button request URL", exact=True)
    expect(url).to_be_visible()
    expect(url).to_have_value("http://10.20.30.40/invoices/resend")
    expect(page.get_by_label("Button request header 1 name", exact=True)).to_have_value(
        "Content-Type"
    )
    url.fill(f"{api}/echo/invoices/resend")
    _save(page, "Save action", "Action created.")

    stored = _stored(page, BUTTON_TOOL)
    http = stored["on_click"]["http"]
    assert {k: http[k] for k in ("method", "url", "headers", "body", "auth")} == {
        "method": "PUT",
        "url": f"{api}/echo/invoices/resend",
        "headers": {"Content-Type": "application/json"},
        "body": {"to": "{{lead.email}}"},
        "auth": {"type": "headers", "headers": {"X-Billing-Token": "{{secrets.CRM}}"}},
    }
    _run_test_panel(page, BUTTON_TOOL, {"lead.email": "jo@example.com"})
    sent = live_gateway.api.last()
    assert (sent.method, sent.path) == ("PUT", "/echo/invoices/resend")
    assert json.loads(sent.body) == {"to": "jo@example.com"}
    assert sent.headers["X-Billing-Token"] == CRM_SECRET
    assert CRM_SECRET not in page.content()


@pytest.mark.parametrize(
    ("tool", "field", "value"),
    [
        (FORM_TOOL, "Submit request header 1 name", "X-Source"),
        (BUTTON_TOOL, "Button request method", "PUT"),
    ],
)
def test_an_unchanged_edit_of_a_request_editor_keeps_the_definition(
    page: Page, tool: str, field: str, value: str
) -> None:
    before = _stored(page, tool)
    page.goto(f"/actions/{tool}/edit")
    # The stored request fills the editors; saving them as they are changes nothing.
    expect(page.get_by_label(field, exact=True)).to_have_value(value)
    assert _unlabelled(page) == []
    _save(page, "Save changes", "Action saved.")
    assert _stored(page, tool) == before
