"""Editing an action in the wizard and managing secrets on the Secrets page, in a real browser.

Each test seeds what it needs through :class:`Admin`, so it does not depend on the other
browser tests having run.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from tests.browser.conftest import ADMIN_TOKEN, LiveGateway, missing, shot

if missing() is not None:
    pytest.skip("browser tests skipped (see test_dashboard)", allow_module_level=True)

from playwright.sync_api import Page, expect

LITERAL_TOKEN = "literal-TOKEN-456"
SECRET_VALUE = "helpdesk-SECRET-xyz789"


@pytest.fixture
def billing_action(live_gateway: LiveGateway) -> Iterator[str]:
    """An action with a literal (write-only) bearer token."""
    admin = live_gateway.services.admin
    saved = live_gateway.run(
        admin.create_action(
            {
                "name": "Billing Lookup",
                "url": f"{live_gateway.api.base_url}/echo/billing",
                "auth": {"type": "bearer", "token": LITERAL_TOKEN},
                "when_not_to_use": "Never for refunds.",
            }
        )
    )
    yield saved["tool_name"]
    live_gateway.run(admin.delete_action(saved["tool_name"]))


def _api_action(page: Page, gw: LiveGateway, tool: str) -> dict[str, object]:
    r = page.request.get(
        f"{gw.base_url}/api/actions/{tool}", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    assert r.ok
    data: dict[str, object] = r.json()
    return data


def test_edit_an_action_keeps_its_masked_credential(
    page: Page, live_gateway: LiveGateway, billing_action: str
) -> None:
    tool = billing_action
    page.goto(f"/actions/{tool}")
    page.get_by_role("link", name="Edit", exact=True).click()
    expect(page.get_by_role("heading", name=re.compile("Edit Action"))).to_be_visible()
    # The wizard opens on Configure, prefilled; the credential stays masked.
    expect(page.get_by_label("Name", exact=True)).to_have_value("Billing Lookup")
    expect(page.get_by_label("Authentication", exact=True)).to_have_value("bearer")
    token = page.get_by_label("Token", exact=True)
    expect(token).to_have_value("********")
    expect(token).to_have_accessible_description(re.compile("leave \\*{8} to keep"))
    assert LITERAL_TOKEN not in page.content()
    shot(page, "edit-2-configure")

    # The type is shown but cannot change.
    page.get_by_role("button", name="Back").first.click()
    expect(page.get_by_label("HTTP Request", exact=True)).to_be_checked()
    expect(page.get_by_label("HTTP Request", exact=True)).to_be_disabled()
    expect(page.get_by_label("Form Collection", exact=True)).to_be_disabled()
    page.get_by_role("button", name="Next").first.click()

    # A mistake first: the error shows next to the field and nothing typed is lost.
    url = page.get_by_label("URL", exact=True)
    new_url = f"{live_gateway.api.base_url}/echo/billing/v2"
    url.fill(new_url)
    page.get_by_label("Response max characters").fill("lots")
    page.locator('section[data-step="2"]').get_by_role("button", name="Next").click()
    page.locator('section[data-step="3"]').get_by_role("button", name="Next").click()
    page.get_by_role("textbox", name="When not to use").fill("Never for refunds or chargebacks.")
    page.get_by_role("link", name="6. Enable").click()
    page.get_by_role("button", name="Save changes").click()
    expect(page.locator("#err-response_max_chars")).to_contain_text("expected a number")
    expect(page.get_by_label("URL", exact=True)).to_have_value(new_url)
    expect(page.get_by_label("Token", exact=True)).to_have_value("********")
    shot(page, "edit-error")

    page.get_by_label("Response max characters").fill("2000")
    page.get_by_role("link", name="4. Describe").click()
    expect(page.get_by_role("textbox", name="When not to use")).to_have_value(
        "Never for refunds or chargebacks."
    )
    page.get_by_role("link", name="6. Enable").click()
    page.get_by_role("button", name="Save changes").click()

    expect(page.get_by_role("status")).to_have_text("Action saved.")
    assert page.url.endswith(f"/actions/{tool}?saved=1")
    definition = page.get_by_label("Definition JSON")
    expect(definition).to_contain_text("Never for refunds or chargebacks.")
    expect(definition).to_contain_text("/echo/billing/v2")
    expect(definition).to_contain_text('"token": "********"')
    shot(page, "edit-saved")

    data = _api_action(page, live_gateway, tool)
    assert data["when_not_to_use"] == "Never for refunds or chargebacks."
    assert data["url"] == new_url
    assert data["auth"] == {"type": "bearer", "token": "********"}
    assert data["response"] == {"redact": [], "max_chars": 2000}

    # The stored credential still works: the Test panel sends it and shows it redacted.
    page.get_by_role("button", name="Run test").click()
    expect(page.get_by_role("region", name="Test result")).to_contain_text("Result: success")
    status = page.get_by_role("region", name="Test result").locator("dd").first
    expect(status).to_have_text(re.compile(r"^2\d\d$"))
    expect(page.get_by_label("Request", exact=True)).to_contain_text("[REDACTED]")
    assert LITERAL_TOKEN not in page.content()
    received = live_gateway.api.last()
    assert received.path == "/echo/billing/v2"
    assert received.headers["Authorization"] == f"Bearer {LITERAL_TOKEN}"
    shot(page, "edit-test")


def test_edit_refuses_a_post_without_csrf(page: Page, billing_action: str) -> None:
    r = page.request.post(f"/actions/{billing_action}/edit", form={"url": "http://x/"})
    assert r.status == 403
    r = page.request.post("/secrets", form={"name": "X", "value": "y", "csrf": "forged"})
    assert r.status == 403


def _create_helpdesk_action(live_gateway: LiveGateway) -> str:
    """An action that sends the HELPDESK_KEY secret (saving it needs the secret to exist)."""
    saved = live_gateway.run(
        live_gateway.services.admin.create_action(
            {
                "name": "Helpdesk Ping",
                "url": f"{live_gateway.api.base_url}/echo/helpdesk",
                "headers": {"X-Helpdesk-Key": "{{secrets.HELPDESK_KEY}}"},
            }
        )
    )
    tool: str = saved["tool_name"]
    return tool


def test_secrets_page_sets_uses_and_deletes_a_secret(page: Page, live_gateway: LiveGateway) -> None:
    page.get_by_role("link", name="Secrets").click()
    expect(page.get_by_role("heading", name="Secrets", exact=True)).to_be_visible()
    table = page.get_by_role("table", name="Secrets")
    # The file's secret is listed by name and source, without a Delete button.
    crm = table.get_by_role("row", name=re.compile(r"\bCRM\b"))
    expect(crm).to_contain_text("config")
    expect(crm.get_by_role("button")).to_have_count(0)

    value = page.get_by_label("Value", exact=True)
    expect(value).to_have_attribute("type", "password")
    # A bad name: the error shows next to the Name field, and the value is not echoed back.
    page.get_by_label("Name", exact=True).fill("bad name")
    value.fill(SECRET_VALUE)
    page.get_by_role("button", name="Save secret").click()
    expect(page.locator("#err-name")).to_contain_text("name must match")
    expect(page.get_by_label("Name", exact=True)).to_have_value("bad name")
    assert SECRET_VALUE not in page.content()
    shot(page, "secrets-error")

    page.get_by_label("Name", exact=True).fill("HELPDESK_KEY")
    page.get_by_label("Value", exact=True).fill(SECRET_VALUE)
    page.get_by_role("button", name="Save secret").click()
    expect(page.get_by_role("status")).to_have_text("Secret HELPDESK_KEY saved.")
    row = table.get_by_role("row", name=re.compile("HELPDESK_KEY"))
    expect(row).to_contain_text("store")
    expect(row).to_contain_text("yes")
    expect(row).to_contain_text(re.compile(r"\d{4}-\d\d-\d\dT"))
    assert SECRET_VALUE not in page.content()
    shot(page, "secrets")

    helpdesk_action = _create_helpdesk_action(live_gateway)
    page.goto(f"/actions/{helpdesk_action}")
    page.get_by_role("button", name="Run test").click()
    expect(page.get_by_role("region", name="Test result")).to_contain_text("Result: success")
    assert SECRET_VALUE not in page.content()
    assert live_gateway.api.last().headers["X-Helpdesk-Key"] == SECRET_VALUE
    # A secret an action uses cannot be deleted (409), so the action goes first.
    live_gateway.run(live_gateway.services.admin.delete_action(helpdesk_action))

    page.get_by_role("link", name="Secrets").click()
    page.get_by_role("button", name="Delete HELPDESK_KEY").click()
    expect(page.get_by_role("status")).to_have_text("Secret HELPDESK_KEY deleted.")
    expect(table.get_by_role("row", name=re.compile("HELPDESK_KEY"))).to_have_count(0)
    names = [s["name"] for s in live_gateway.run(live_gateway.services.admin.list_secrets())]
    assert "HELPDESK_KEY" not in names
