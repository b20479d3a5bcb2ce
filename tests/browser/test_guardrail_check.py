"""The Guardrail check in a real browser: starter cases made in the wizard's "When not to use"
step, saved with the action, then run from the action's Guardrail check tab.

The scripted upstream answers by its rules here (``rules`` on for this test only): it reads the
guardrails it recognises, so the new action's SKIP case is skipped for the reason it states.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from tests.browser.conftest import LiveGateway, missing, shot

if missing() is not None:
    pytest.skip("browser tests skipped (see test_dashboard)", allow_module_level=True)

from playwright.sync_api import Page, expect

from examples.scripted_upstream import ScriptedUpstream

TOOL = "demo_scheduler"
GUARDRAIL = "Do not offer a demo to existing customers with a support problem."


@pytest.fixture(scope="module", autouse=True)
def _cleanup(live_gateway: LiveGateway) -> Iterator[None]:
    yield
    admin = live_gateway.services.admin
    if any(a["tool_name"] == TOOL for a in admin.list_actions()):
        live_gateway.run(admin.delete_action(TOOL))


@pytest.fixture
def rules(scripted: ScriptedUpstream) -> Iterator[ScriptedUpstream]:
    """The scripted model choosing by its rules, for this test only."""
    scripted.state.rules = True
    try:
        yield scripted
    finally:
        scripted.state.rules = False


def test_starter_cases_from_the_wizard_run_on_the_guardrail_check_tab(
    page: Page, live_gateway: LiveGateway, rules: ScriptedUpstream
) -> None:
    page.goto("/actions/new")
    page.get_by_label("HTTP Request", exact=True).check()
    page.get_by_role("button", name="Next").click()
    page.get_by_label("Name", exact=True).fill("Demo Scheduler")
    page.get_by_label("URL", exact=True).fill(f"{live_gateway.api.base_url}/echo/demo")
    steps = page.get_by_role("navigation", name="Wizard steps")
    steps.get_by_role("link", name="4. Describe").click()
    page.get_by_label("When not to use", exact=True).fill(GUARDRAIL)
    page.get_by_role("button", name="Make starter cases").click()

    # Back on step 4 with one SKIP row per guardrail sentence and one CALL row, to be edited.
    expect(steps.get_by_role("link", name="4. Describe")).to_have_attribute("aria-current", "step")
    first = page.get_by_label("Case 1 customer message", exact=True)
    expect(first).to_have_value(re.compile(r"^I'm an existing customer and my order A-10023"))
    expect(page.get_by_label("Case 1 the model should", exact=True)).to_have_value("skip")
    expect(page.get_by_label("Case 2 the model should", exact=True)).to_have_value("call")
    page.get_by_label("Case 2 customer message", exact=True).fill("Can I get a demo?")
    shot(page, "guardrail-starter-cases")

    steps.get_by_role("link", name="6. Enable").click()
    page.get_by_label("Support assistant").check()
    page.get_by_role("button", name="Save action").click()
    expect(page.get_by_role("status")).to_have_text("Action created.")

    page.get_by_role("navigation", name="Action").get_by_role(
        "link", name="Guardrail check"
    ).click()
    expect(page.get_by_label("Case 2 customer message", exact=True)).to_have_value(
        "Can I get a demo?"
    )
    page.get_by_label("Agent").select_option("support")
    page.get_by_label(re.compile(r"^Runs")).fill("2")
    received = len(live_gateway.api.received)
    page.get_by_role("button", name="Run check").click()

    table = page.get_by_role("table", name=re.compile(r"^Result: 2 cases x 2 runs"))
    expect(table).to_be_visible()
    row = table.get_by_role("row", name=re.compile(TOOL))
    # 2 correct calls, 0 false triggers, 0 missed, precision, recall, false-trigger rate.
    expect(row.get_by_role("cell")).to_have_text(["2", "0", "0", "100 %", "100 %", "0 %", "0"])
    expect(page.locator("#failing")).to_have_text("None: every case came out as labelled.")
    assert len(rules.state.requests) == 4  # one model request per case and run
    assert len(live_gateway.api.received) == received  # no action API was sent anything
    shot(page, "guardrail-check-tab")
