"""The Guardrail check of one action through the admin API (issue 19, the dashboard items).

The demo's config runs on a rules-mode scripted model (examples/scripted_upstream.py reads the
guardrails it recognises, ``GUARDRAILS``) and a recording action API: a check must score the
stored cases exactly as ``evaluate()`` scores the same suite, send one model request per case
and run, and never reach the action API.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from examples.scripted_upstream import ScriptedUpstream, running_upstream
from gateway.app import create_app
from gateway.cli.main import main
from gateway.definitions.config import load_config
from gateway.evaluation.action_cases import parse_cases, to_suite
from gateway.evaluation.run import LiveAnswers, evaluate
from gateway.evaluation.suite import parse_suite
from gateway.stores.eval_cases import EvalCaseStore
from tests.support.action_api import ActionAPI, running_api

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TOKEN = "admin-SECRET-token-gc"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
EMAIL = {"lead.email": "jane@example.com"}

REFUND_CASES: list[dict[str, Any]] = [
    {
        "message": "Refund order A-10024, it arrived damaged",
        "expect": "call",
        "variables": EMAIL,
        "arguments": {"order_number": "A-10024"},
    },
    {
        "message": "What is your refund policy for order A-10024?",
        "expect": "skip",
        "variables": EMAIL,
    },
    {"message": "Could you tell me how refunds work?", "expect": "skip", "variables": EMAIL},
]
"""The refund cases of examples/guardrails.eval.yaml, as the dashboard stores them."""


@dataclass
class World:
    client: httpx.AsyncClient
    upstream: ScriptedUpstream
    api: ActionAPI
    config: Path
    database: str


@asynccontextmanager
async def serving(config: Path, database: str) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(load_config(config), database=database)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            yield client


@pytest.fixture
async def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[World]:
    """The demo's config pointed at a rules-mode scripted model and a recording action API."""
    monkeypatch.setenv("ACTIONGATE_ADMIN_TOKEN", TOKEN)
    async with running_upstream(rules=True) as upstream, running_api() as api:
        text = (EXAMPLES / "demo.yaml").read_text()
        text = text.replace("http://127.0.0.1:8091/v1", upstream.base_url)
        text = text.replace("http://127.0.0.1:8092", api.base_url)
        config = tmp_path / "demo.yaml"
        config.write_text(text)
        database = f"sqlite:///{tmp_path / 'gc.db'}"
        async with serving(config, database) as client:
            yield World(client, upstream, api, config, database)


async def put_cases(w: World, tool: str, cases: Any) -> httpx.Response:
    return await w.client.put(
        f"/api/actions/{tool}/eval-cases", json={"cases": cases}, headers=AUTH
    )


async def run(w: World, tool: str, **body: Any) -> httpx.Response:
    return await w.client.post(f"/api/actions/{tool}/eval", json=body, headers=AUTH)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/actions/submit_refund/eval-cases"),
        ("PUT", "/api/actions/submit_refund/eval-cases"),
        ("POST", "/api/actions/submit_refund/eval"),
        ("GET", "/api/actions/submit_refund/eval-suite"),
    ],
)
@pytest.mark.parametrize("token", [None, "wrong"])
async def test_every_eval_route_needs_the_admin_token(
    world: World, method: str, path: str, token: str | None
) -> None:
    assert (await put_cases(world, "submit_refund", REFUND_CASES)).status_code == 200
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    r = await world.client.request(method, path, headers=headers, json={"cases": []})
    assert r.status_code == 401
    assert r.json()["error"]["type"] == "authentication_error"
    kept = await world.client.get("/api/actions/submit_refund/eval-cases", headers=AUTH)
    assert len(kept.json()["items"]) == 3  # the anonymous PUT replaced nothing
    assert world.upstream.state.requests == []  # nor did the anonymous POST run a check


@pytest.mark.parametrize(
    ("case", "field", "words"),
    [
        ({"message": "  ", "expect": "call"}, "cases[1].message", "must not be empty"),
        ({"message": "Hi", "expect": "maybe"}, "cases[1].expect", "'call' or 'skip'"),
        ({"message": "Hi"}, "cases[1].expect", "Field required"),
        (
            {"message": "Hi", "expect": "call", "variables": {"email": "a@b.c"}},
            "cases[1].variables",
            "'email' is not a conversation variable",
        ),
        (
            {"message": "Hi", "expect": "skip", "arguments": {"order_number": "A-1"}},
            "cases[1].arguments",
            "only a case the model should CALL",
        ),
        ({"message": "Hi", "expect": "call", "colour": "red"}, "cases[1].colour", "Extra"),
    ],
)
async def test_a_bad_case_is_refused_naming_the_field(
    world: World, case: dict[str, Any], field: str, words: str
) -> None:
    r = await put_cases(world, "submit_refund", [REFUND_CASES[0], case])
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["param"] == field
    assert error["message"].startswith(f"{field}: ") and words in error["message"]
    stored = await world.client.get("/api/actions/submit_refund/eval-cases", headers=AUTH)
    assert stored.json()["items"] == []  # nothing was stored


async def test_unknown_action_and_bad_options_are_named(world: World) -> None:
    assert (await put_cases(world, "no_such_action", REFUND_CASES)).status_code == 404
    assert (await run(world, "submit_refund")).json()["error"]["param"] == "cases"  # none yet
    await put_cases(world, "submit_refund", REFUND_CASES)
    for body, param in (({"runs": 0}, "runs"), ({"runs": 11}, "runs"), ({"fast": True}, "fast")):
        r = await run(world, "submit_refund", **body)
        assert r.status_code == 422 and r.json()["error"]["param"] == param, r.text
    assert (await run(world, "submit_refund", agent="nobody")).status_code == 404
    assert world.upstream.state.requests == []


async def test_cases_survive_a_restart_and_belong_to_their_action(world: World) -> None:
    r = await put_cases(world, "submit_refund", REFUND_CASES)
    assert r.status_code == 200
    names = [c["name"] for c in r.json()["items"]]
    assert names == [c["message"] for c in REFUND_CASES]  # a blank name takes the message
    async with serving(world.config, world.database) as again:
        got = await again.get("/api/actions/submit_refund/eval-cases", headers=AUTH)
        other = await again.get("/api/actions/look_up_order/eval-cases", headers=AUTH)
    assert got.json()["items"] == r.json()["items"]
    assert other.json()["items"] == []


async def test_an_agent_without_the_action_cannot_run_its_cases(world: World) -> None:
    await put_cases(world, "submit_refund", REFUND_CASES)
    agent = {"id": "sales", "system_prompt": "You sell.", "actions": ["book_a_demo"]}
    assert (await world.client.post("/api/agents", json=agent, headers=AUTH)).is_success
    r = await run(world, "submit_refund", agent="sales")
    assert r.status_code == 422
    assert r.json()["error"]["param"] == "agent"
    assert "'sales' does not offer action 'submit_refund'" in r.json()["error"]["message"]
    assert world.upstream.state.requests == []


async def test_the_api_check_gives_evaluates_numbers_and_runs_no_action(world: World) -> None:
    await put_cases(world, "submit_refund", REFUND_CASES)
    r = await run(world, "submit_refund", agent="support", runs=2)
    assert r.status_code == 200, r.text
    report = r.json()
    assert len(world.upstream.state.requests) == 3 * 2  # one model request per case and run
    assert world.api.received == []  # no action API was sent anything

    suite = to_suite("submit_refund", parse_cases(REFUND_CASES), agent="support", runs=2)
    answers = LiveAnswers()
    try:
        expected = await evaluate(
            suite, load_config(world.config), answers=answers, label="support"
        )
    finally:
        await answers.close()
    assert report == expected.to_dict()
    refund = report["actions"]["submit_refund"]
    assert (refund["correct_calls"], refund["false_triggers"], refund["correct_skips"]) == (2, 0, 4)
    assert refund["precision"] == 1.0 and refund["recall"] == 1.0
    assert world.api.received == []


async def test_editing_the_guardrail_changes_the_report_as_the_rules_say(world: World) -> None:
    await put_cases(world, "submit_refund", REFUND_CASES)
    before = (await run(world, "submit_refund")).json()["actions"]["submit_refund"]
    assert (before["false_triggers"], before["precision"]) == (0, 1.0)
    # The scripted model skips a refund for a policy question only while the guardrail says so.
    patch = {"when_not_to_use": "Do not use this for orders older than 30 days."}
    assert (
        await world.client.patch("/api/actions/submit_refund", json=patch, headers=AUTH)
    ).is_success
    after = (await run(world, "submit_refund")).json()["actions"]["submit_refund"]
    assert (after["false_triggers"], after["precision"]) == (1, 0.5)
    policy = "What is your refund policy for order A-10024?"
    assert after["failing_cases"] == {policy: 1}
    assert world.api.received == []


async def test_the_exported_suite_runs_in_actiongate_eval_with_the_same_numbers(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await put_cases(world, "submit_refund", REFUND_CASES)
    r = await world.client.get(
        "/api/actions/submit_refund/eval-suite", params={"agent": "support"}, headers=AUTH
    )
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/yaml")
    suite = tmp_path / "refund.eval.yaml"
    suite.write_text(r.text)
    parse_suite(yaml.safe_load(r.text))  # a valid suite as written
    status = await asyncio.to_thread(
        main, ["eval", str(suite), "--config", str(world.config), "--json"]
    )
    cli = json.loads(capsys.readouterr().out)
    api = (await run(world, "submit_refund", agent="support")).json()
    assert status == 0
    assert cli["actions"] == api["actions"] and cli["cases"] == api["cases"]
    assert world.api.received == []


async def test_deleting_an_action_forgets_its_cases(world: World) -> None:
    await put_cases(world, "submit_refund", REFUND_CASES)
    assert (
        await world.client.delete("/api/actions/submit_refund", headers=AUTH)
    ).status_code == 204
    refund = {
        "name": "Submit refund",
        "url": f"{world.api.base_url}/refunds",
        "method": "POST",
    }
    assert (await world.client.post("/api/actions", json=refund, headers=AUTH)).status_code == 201
    got = await world.client.get("/api/actions/submit_refund/eval-cases", headers=AUTH)
    assert got.json()["items"] == []  # a new action of the same name starts without cases


async def test_expected_arguments_typed_as_text_follow_the_parameter_type(world: World) -> None:
    case = {
        "message": "Refund 12.5 of order A-10024, it arrived damaged",
        "expect": "call",
        "arguments": {"order_number": "A-10024", "amount": "12.5"},
    }
    r = await put_cases(world, "submit_refund", [case])
    assert r.json()["items"][0]["arguments"] == {"order_number": "A-10024", "amount": 12.5}


async def test_the_store_keeps_each_actions_list_on_both_databases(db_engine: Any) -> None:
    store = EvalCaseStore(db_engine)
    first = [{"message": "a", "expect": "call"}, {"message": "b", "expect": "skip"}]
    await store.put("look_up_order", first)
    await store.put("submit_refund", [{"message": "c", "expect": "skip"}])
    assert await store.get("look_up_order") == first  # in the order saved
    await store.put("look_up_order", first[1:])  # a save replaces the whole list
    assert await store.get("look_up_order") == first[1:]
    await store.put("look_up_order", [])
    assert await store.get("look_up_order") == []
    assert await store.get("submit_refund") == [{"message": "c", "expect": "skip"}]


async def test_a_check_without_a_body_runs_once_on_the_first_agent(world: World) -> None:
    await put_cases(world, "submit_refund", REFUND_CASES)
    r = await world.client.post("/api/actions/submit_refund/eval", headers=AUTH)
    assert r.status_code == 200, r.text
    assert (r.json()["config"], r.json()["runs"]) == ("support", 1)
    assert len(world.upstream.state.requests) == len(REFUND_CASES)
