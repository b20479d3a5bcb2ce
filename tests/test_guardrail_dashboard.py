"""The Guardrail check tab and the wizard's "Make starter cases", server-rendered (issue 19).

The starter generator is checked on the seed's three guardrail examples (order lookup, refund
submission, appointment booking: examples/demo.yaml); the tab is driven like a browser without
its script would drive it: forms with the session's CSRF token.
"""

from __future__ import annotations

import html
import json
import re
from typing import Any

import httpx
import pytest
import yaml

from gateway.evaluation.starters import guardrail_conditions, starter_cases
from tests.test_guardrail_checks import AUTH, EXAMPLES, REFUND_CASES, TOKEN, World, put_cases
from tests.test_guardrail_checks import world as world  # the fixture, shared

DEMO = {a["name"]: a for a in yaml.safe_load((EXAMPLES / "demo.yaml").read_text())["actions"]}


def starters(name: str) -> list[tuple[str, str, dict[str, str], dict[str, Any]]]:
    action = DEMO[name]
    uses_email = "lead.email" in json.dumps(action)
    cases = starter_cases(
        name, action["when_not_to_use"], action.get("parameters"), uses_email=uses_email
    )
    return [(c.expect, c.message, c.variables, c.arguments) for c in cases]


def test_order_lookup_without_an_order_number_is_a_skip() -> None:
    assert starters("Look up order") == [
        (
            "skip",
            "I'd like to look up order. My email is jane@example.com.",
            {"lead.email": "jane@example.com"},
            {},
        ),
        (
            "call",
            "I'd like to look up order. My order number is A-10023. My email is jane@example.com.",
            {"lead.email": "jane@example.com"},
            {"order_number": "A-10023"},  # the example in the argument's description
        ),
    ]


def test_the_seed_sentence_leaves_out_what_was_not_provided() -> None:
    cases = starter_cases(
        "Order lookup",
        "Do not use if the customer hasn't provided an order number",
        {"order_number": {"required": True}},
    )
    assert [(c.expect, c.message) for c in cases] == [
        ("skip", "I'd like to order lookup."),
        ("call", "I'd like to order lookup. My order number is A-10023."),
    ]


def test_refund_submission_gets_one_skip_per_condition() -> None:
    guardrail = DEMO["Submit refund"]["when_not_to_use"]
    assert guardrail_conditions(guardrail) == [
        "Do not use this for orders older than 30 days",
        "when the customer only asks about the refund policy",
    ]
    (older, policy, call) = starters("Submit refund")
    assert older[0] == "skip" and older[1].endswith("It was delivered 45 days ago.")
    assert policy[0] == "skip" and policy[1].startswith("What is your refund policy?")
    assert call[0] == "call" and call[3] == {"order_number": "A-10023", "reason": "damaged"}
    assert "refund policy" not in call[1] and "days ago" not in call[1]


def test_appointment_booking_for_an_existing_customer_with_a_problem_is_a_skip() -> None:
    (problem, call) = starters("Book a Demo!")
    assert problem[0] == "skip"
    assert problem[1].startswith("I'm an existing customer and my order A-10023 is broken.")
    assert call == (
        "call",
        "I'd like to book a demo. My email is jane@example.com.",
        {"lead.email": "jane@example.com"},
        {},
    )


def test_the_customer_account_guardrail_splits_at_or_if() -> None:
    (no_email, general, call) = starters("Get Customer Account")
    assert no_email == ("skip", "I'd like to get customer account.", {}, {})  # no email at all
    assert general[1] == "I have a general question: what are your opening hours?"
    assert call[2] == {"lead.email": "jane@example.com"}


def test_an_unrecognised_guardrail_asks_the_operator_to_rewrite() -> None:
    (skip, _) = starter_cases("Order lookup", "Never on weekends.")
    assert skip.message.endswith("[Rewrite this message so that it matches: Never on weekends]")


# --- the tab -------------------------------------------------------------------------------------


async def login(client: httpx.AsyncClient) -> str:
    page = await client.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf
    done = await client.post("/login", data={"csrf": csrf.group(1), "token": TOKEN})
    assert done.status_code == 303
    page = await client.get("/actions")
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found
    return found.group(1)


def rows(cases: list[dict[str, Any]]) -> dict[str, str]:
    form: dict[str, str] = {}
    for i, c in enumerate(cases):
        form[f"case-{i}-message"] = c["message"]
        form[f"case-{i}-expect"] = c["expect"]
        form[f"case-{i}-variables"] = ", ".join(
            f"{k}={v}" for k, v in c.get("variables", {}).items()
        )
        form[f"case-{i}-arguments"] = ", ".join(
            f"{k}={v}" for k, v in c.get("arguments", {}).items()
        )
    return form


def cells(page: str) -> list[str]:
    table = re.search(r'<table aria-labelledby="report-h" id="report">.*?</table>', page, re.S)
    assert table, page
    row = re.search(r"<tbody>\s*<tr>(.*?)</tr>", table.group(), re.S)
    assert row
    return [
        html.unescape(re.sub(r"<[^>]+>", "", c))
        for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row.group(1))
    ]


async def test_the_tab_saves_rows_and_shows_evaluates_numbers(world: World) -> None:
    csrf = await login(world.client)
    page = await world.client.get("/actions/submit_refund/guardrails")
    assert page.status_code == 200 and 'aria-current="page">Guardrail check' in page.text
    saved = await world.client.post(
        "/actions/submit_refund/guardrails",
        data={"csrf": csrf, "intent": "save", **rows(REFUND_CASES)},
    )
    assert saved.status_code == 303
    stored = (await world.client.get("/api/actions/submit_refund/eval-cases", headers=AUTH)).json()
    assert [(c["message"], c["expect"], c["variables"]) for c in stored["items"]] == [
        (c["message"], c["expect"], c["variables"]) for c in REFUND_CASES
    ]
    page = await world.client.get("/actions/submit_refund/guardrails")
    assert 'value="What is your refund policy for order A-10024?"' in page.text
    assert 'href="/actions/submit_refund/guardrails/suite.yaml"' in page.text

    shown = await world.client.post(
        "/actions/submit_refund/guardrails/run",
        data={"csrf": csrf, "agent": "support", "runs": "2"},
    )
    assert shown.status_code == 200
    api = (
        await world.client.post("/api/actions/submit_refund/eval", json={"runs": 2}, headers=AUTH)
    ).json()
    s = api["actions"]["submit_refund"]
    assert cells(shown.text) == [
        "submit_refund",
        str(s["correct_calls"]),
        str(s["false_triggers"]),
        str(s["missed"]),
        "100 %",
        "100 %",
        "0 %",
        str(s["argument_mismatches"]),
    ]
    assert "None: every case came out as labelled." in shown.text
    assert world.api.received == []


async def test_the_tab_lists_failing_cases_after_the_guardrail_goes(world: World) -> None:
    csrf = await login(world.client)
    await put_cases(world, "submit_refund", REFUND_CASES)
    patch = {"when_not_to_use": "Do not use this for orders older than 30 days."}
    await world.client.patch("/api/actions/submit_refund", json=patch, headers=AUTH)
    shown = await world.client.post(
        "/actions/submit_refund/guardrails/run",
        data={"csrf": csrf, "agent": "support", "runs": "1"},
    )
    assert cells(shown.text)[1:5] == ["1", "1", "0", "50 %"]  # a false trigger: precision 50 %
    failing = re.search(
        r'<ul aria-labelledby="failing-h" id="failing">(.*?)</ul>', shown.text, re.S
    )
    assert failing and "false trigger in “What is your refund policy for order A-10024?”" in (
        html.unescape(failing.group(1))
    )


async def test_a_bad_row_or_runs_is_named_and_nothing_changes(world: World) -> None:
    csrf = await login(world.client)
    await put_cases(world, "submit_refund", REFUND_CASES)
    bad = rows(REFUND_CASES[:1]) | {
        "case-1-message": "Hi",
        "case-1-expect": "skip",
        "case-1-variables": "email jane@example.com",
    }
    page = await world.client.post(
        "/actions/submit_refund/guardrails", data={"csrf": csrf, "intent": "save", **bad}
    )
    assert page.status_code == 422
    assert "Case 2 conversation variables: write name=value pairs" in html.unescape(page.text)
    assert 'value="email jane@example.com"' in page.text  # the operator's input is kept
    runs = await world.client.post(
        "/actions/submit_refund/guardrails/run",
        data={"csrf": csrf, "agent": "support", "runs": "11"},
    )
    assert runs.status_code == 422 and "runs: a whole number from 1 to 10" in runs.text
    stored = (await world.client.get("/api/actions/submit_refund/eval-cases", headers=AUTH)).json()
    assert len(stored["items"]) == 3
    assert world.upstream.state.requests == []


async def test_delete_ticks_remove_cases_and_posts_need_the_csrf_token(world: World) -> None:
    csrf = await login(world.client)
    await put_cases(world, "submit_refund", REFUND_CASES)
    form = rows(REFUND_CASES) | {"case-1-delete": "on"}
    forged = await world.client.post(
        "/actions/submit_refund/guardrails", data={"intent": "save", **form}
    )
    assert forged.status_code == 403
    forged_run = await world.client.post(
        "/actions/submit_refund/guardrails/run", data={"runs": "1"}
    )
    assert forged_run.status_code == 403 and world.upstream.state.requests == []
    more = await world.client.post(
        "/actions/submit_refund/guardrails", data={"csrf": csrf, "intent": "add:case", **form}
    )
    assert 'id="case-4-message"' in more.text  # "Add case" shows a blank row, stores nothing
    done = await world.client.post(
        "/actions/submit_refund/guardrails", data={"csrf": csrf, "intent": "save", **form}
    )
    assert done.status_code == 303
    stored = (await world.client.get("/api/actions/submit_refund/eval-cases", headers=AUTH)).json()
    assert [c["message"] for c in stored["items"]] == [
        REFUND_CASES[0]["message"],
        REFUND_CASES[2]["message"],
    ]


async def test_the_download_is_the_suite_the_cli_reads(world: World) -> None:
    await login(world.client)
    await put_cases(world, "submit_refund", REFUND_CASES)
    r = await world.client.get("/actions/submit_refund/guardrails/suite.yaml")
    assert r.status_code == 200
    assert r.headers["content-disposition"] == 'attachment; filename="submit_refund.eval.yaml"'
    data = yaml.safe_load(r.text)
    assert [c["skips" if "skips" in c else "calls"] for c in data["cases"]] == [
        ["submit_refund"]
    ] * 3


# --- the wizard ----------------------------------------------------------------------------------


def wizard_form(csrf: str, world: World, intent: str) -> dict[str, str]:
    return {
        "csrf": csrf,
        "intent": intent,
        "type": "http",
        "name": "Order Status",
        "method": "GET",
        "url": f"{world.api.base_url}/orders/{{{{args.order_number}}}}",
        "param-0-name": "order_number",
        "param-0-type": "string",
        "param-0-required": "on",
        "param-0-description": "The order number, e.g. A-10023.",
        "when_not_to_use": "Do not use if the customer hasn't provided an order number.",
        "agent": "support",
    }


async def test_the_wizard_makes_starter_cases_and_saves_them_with_the_action(world: World) -> None:
    csrf = await login(world.client)
    page = await world.client.post("/actions/new", data=wizard_form(csrf, world, "starter_cases"))
    assert page.status_code == 200 and 'data-step="4"' in page.text
    assert (
        'id="case-0-message" name="case-0-message" value="I&#39;d like to order status."'
        in page.text
    )
    assert "I&#39;d like to order status. My order number is A-10023." in page.text
    assert (await world.client.get("/api/actions/order_status", headers=AUTH)).status_code == 404

    form = wizard_form(csrf, world, "save") | {
        "case-0-message": "Where is my order?",
        "case-0-expect": "skip",
        "case-1-message": "Where is my order A-10023?",
        "case-1-expect": "call",
        "case-1-arguments": "order_number=A-10023",
    }
    saved = await world.client.post("/actions/new", data=form)
    assert saved.status_code == 303, saved.text
    stored = (await world.client.get("/api/actions/order_status/eval-cases", headers=AUTH)).json()
    assert [(c["expect"], c["arguments"]) for c in stored["items"]] == [
        ("skip", {}),
        ("call", {"order_number": "A-10023"}),
    ]
    edit = await world.client.get("/actions/order_status/edit")
    assert 'value="Where is my order A-10023?"' in edit.text  # the edit wizard shows them
    # The scripted model calls the first tool with "order" in its name: an agent of its own.
    agent = {"id": "orders", "system_prompt": "You track orders.", "actions": ["order_status"]}
    assert (await world.client.post("/api/agents", json=agent, headers=AUTH)).is_success
    body = {"agent": "orders"}
    report = (
        await world.client.post("/api/actions/order_status/eval", json=body, headers=AUTH)
    ).json()
    assert report["actions"]["order_status"]["correct_calls"] == 1
    assert report["actions"]["order_status"]["false_triggers"] == 0
    assert world.api.received == []


async def test_starter_cases_need_a_guardrail(world: World) -> None:
    csrf = await login(world.client)
    form = wizard_form(csrf, world, "starter_cases") | {"when_not_to_use": ""}
    page = await world.client.post("/actions/new", data=form)
    assert page.status_code == 422
    assert "When not to use: write the guardrail first" in page.text


@pytest.mark.parametrize("field", ["case-1-variables", "case-1-arguments"])
async def test_a_bad_case_row_in_the_wizard_stores_no_action(world: World, field: str) -> None:
    csrf = await login(world.client)
    form = wizard_form(csrf, world, "save") | {
        "case-0-message": "Where is my order A-10023?",
        "case-0-expect": "call",
        "case-1-message": "Where is it?",
        "case-1-expect": "call",
        field: "no pairs here",
    }
    page = await world.client.post("/actions/new", data=form)
    assert page.status_code == 422 and 'data-step="4"' in page.text
    assert "Case 2 " in page.text and "write name=value pairs" in page.text
    assert (await world.client.get("/api/actions/order_status", headers=AUTH)).status_code == 404


async def test_every_answer_is_listed_with_what_the_model_called(world: World) -> None:
    csrf = await login(world.client)
    await put_cases(world, "submit_refund", REFUND_CASES[:2])
    shown = await world.client.post(
        "/actions/submit_refund/guardrails/run", data={"csrf": csrf, "agent": "support"}
    )
    table = re.search(
        r'<table aria-label="Every answer of the model">.*?</table>', shown.text, re.S
    )
    assert table
    answers = [
        [html.unescape(c) for c in re.findall(r"<td>(.*?)</td>", row)]
        for row in re.findall(r"<tr><td>.*?</tr>", table.group(), re.S)
    ]
    by_case = {a[0]: a[1:] for a in answers}
    assert by_case[REFUND_CASES[0]["message"]] == ["1", "correct call", "submit_refund", ""]
    # The scripted model skips the refund for the policy question and looks the order up.
    assert by_case[REFUND_CASES[1]["message"]] == ["1", "correct skip", "look_up_order", ""]


async def test_an_upstream_failure_is_shown_and_runs_nothing(world: World) -> None:
    csrf = await login(world.client)
    await put_cases(world, "submit_refund", REFUND_CASES[:1])
    world.upstream.script([{"error": {"status": 500, "message": "the model is down"}}])
    shown = await world.client.post(
        "/actions/submit_refund/guardrails/run", data={"csrf": csrf, "agent": "support"}
    )
    assert shown.status_code == 422
    error = re.search(r'<p class="error" role="alert" id="run-error">(.*?)</p>', shown.text)
    assert error and "the model is down" in html.unescape(error.group(1))
    assert 'id="report"' not in shown.text
    assert world.api.received == []


async def test_the_wizard_says_how_many_starter_cases_it_made(world: World) -> None:
    csrf = await login(world.client)
    form = wizard_form(csrf, world, "starter_cases")
    form["when_not_to_use"] += " Never for a general question."
    page = await world.client.post("/actions/new", data=form)
    status = re.search(r'role="status" id="starter-status">(.*?)</p>', page.text)
    assert status and status.group(1).startswith("Made 3 starter cases")
    assert 'value="I have a general question: what are your opening hours?"' in page.text


@pytest.mark.parametrize(
    ("name", "tool", "expected"),
    [
        # (correct calls, false triggers, missed, correct skips)
        ("Look up order", "look_up_order", (1, 0, 0, 1)),
        ("Book a Demo!", "book_a_demo", (1, 0, 0, 1)),
        # The scripted model knows the refund-policy phrase but not "older than 30 days": the
        # starter case for that sentence shows the false trigger a careless model would make.
        ("Submit refund", "submit_refund", (1, 1, 0, 1)),
    ],
)
async def test_the_seed_starter_cases_exercise_the_scripted_models_guardrails(
    world: World, name: str, tool: str, expected: tuple[int, int, int, int]
) -> None:
    action = DEMO[name]
    cases = starter_cases(
        name,
        action["when_not_to_use"],
        action.get("parameters"),
        uses_email="lead.email" in json.dumps(action),
    )
    assert (await put_cases(world, tool, [c.model_dump() for c in cases])).status_code == 200
    score = (await world.client.post(f"/api/actions/{tool}/eval", headers=AUTH)).json()
    s = score["actions"][tool]
    assert (s["correct_calls"], s["false_triggers"], s["missed"], s["correct_skips"]) == expected
    assert s["argument_mismatches"] == 0
    assert world.api.received == []


async def test_the_tab_adds_starter_cases_for_an_action_from_the_file(world: World) -> None:
    csrf = await login(world.client)
    kept = rows(REFUND_CASES[:1])
    page = await world.client.post(
        "/actions/book_a_demo/guardrails", data={"csrf": csrf, "intent": "starter_cases", **kept}
    )
    assert page.status_code == 200
    assert "Added 2 starter cases" in page.text
    assert 'id="case-0-message" name="case-0-message" value="Refund order A-10024' in page.text
    assert "I&#39;m an existing customer and my order A-10023 is broken." in page.text
    stored = (await world.client.get("/api/actions/book_a_demo/eval-cases", headers=AUTH)).json()
    assert stored["items"] == []  # shown for editing, stored only by "Save cases"
    api = await world.client.get("/api/actions/book_a_demo/eval-cases/starters", headers=AUTH)
    assert [c["expect"] for c in api.json()["items"]] == ["skip", "call"]
    assert (
        await world.client.get("/api/actions/book_a_demo/eval-cases/starters")
    ).status_code == 401


async def test_starters_need_a_guardrail_on_the_action(world: World) -> None:
    patch = {"when_not_to_use": None}
    await world.client.patch("/api/actions/book_a_demo", json=patch, headers=AUTH)
    r = await world.client.get("/api/actions/book_a_demo/eval-cases/starters", headers=AUTH)
    assert r.status_code == 422 and r.json()["error"]["param"] == "when_not_to_use"
