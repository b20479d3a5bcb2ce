"""Admin REST API: auth, CRUD with validation, write-only secrets, toggles reaching the live
proxy, the test endpoint, logs paging, tool export."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.admin.service import MASK
from tests.support.gateway import CRM_SECRET, Gateway, running_gateway

TOKEN = "admin-SECRET-token-42"


@pytest.fixture
async def gw(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Gateway]:
    monkeypatch.setenv("ACTIONGATE_ADMIN_TOKEN", TOKEN)
    async with running_gateway(tmp_path) as gateway:
        yield gateway


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def api(gw: Gateway, method: str, path: str, body: Any = None, **kw: Any) -> httpx.Response:
    return await gw.client.request(method, f"/api{path}", json=body, headers=auth(), **kw)


def new_action(gw: Gateway, **fields: Any) -> dict[str, Any]:
    base = {
        "name": "Check Stock",
        "url": f"{gw.api.base_url}/echo/stock?email={{{{lead.email}}}}",
        "headers": {"X-Api-Key": "literal-SECRET-key-9"},
        "when_not_to_use": "Not for price questions.",
    }
    base.update(fields)
    return base


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/actions"),
        ("POST", "/actions"),
        ("GET", "/agents"),
        ("GET", "/logs"),
        ("GET", "/stats"),
        ("PUT", "/agents/support/actions/look_up_order"),
        ("GET", "/agents/support/tools"),
        ("POST", "/actions/look_up_order/test"),
        ("DELETE", "/actions/look_up_order"),
    ],
)
@pytest.mark.parametrize("token", [None, "wrong", TOKEN + "x", ""])
async def test_every_route_needs_the_admin_token(
    gw: Gateway, method: str, path: str, token: str | None
) -> None:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    r = await gw.client.request(method, f"/api{path}", headers=headers, json={})
    assert r.status_code == 401
    assert r.json()["error"]["type"] == "authentication_error"
    assert "look_up_order" in (await api(gw, "GET", "/actions")).text  # nothing was deleted


async def test_create_get_list_and_use_from_the_proxy(gw: Gateway) -> None:
    r = await api(gw, "POST", "/actions", new_action(gw))
    assert r.status_code == 201
    created = r.json()
    assert created["tool_name"] == "check_stock"
    assert created["headers"]["X-Api-Key"] == MASK  # write-only
    assert "literal-SECRET-key-9" not in (await api(gw, "GET", "/actions/check_stock")).text
    listing = (await api(gw, "GET", "/actions")).json()
    assert "check_stock" in [a["tool_name"] for a in listing["items"]]
    assert listing["next_cursor"] is None

    # Enabled on the agent: the running proxy offers and runs it without a restart.
    r = await api(gw, "PUT", "/agents/support/actions/check_stock")
    assert r.status_code == 200 and "check_stock" in r.json()["enabled_actions"]
    gw.upstream.script(
        [{"tool_calls": [{"name": "check_stock", "arguments": {}}]}, {"content": "In stock."}]
    )
    await gw.chat(
        messages=[{"role": "user", "content": "stock?"}], conversation={"lead": {"email": "s@x.io"}}
    )
    assert "check_stock" in {t["function"]["name"] for t in gw.upstream.requests[0]["tools"]}
    assert gw.api.last().headers["X-Api-Key"] == "literal-SECRET-key-9"

    r = await api(gw, "DELETE", "/agents/support/actions/check_stock")
    assert r.status_code == 200 and "check_stock" not in r.json()["enabled_actions"]
    gw.upstream.script([{"content": "hi"}])
    await gw.chat(messages=[{"role": "user", "content": "x"}])
    assert "check_stock" not in {t["function"]["name"] for t in gw.upstream.requests[-1]["tools"]}


async def test_validation_errors_are_422_naming_the_field(gw: Gateway) -> None:
    cases = [
        (new_action(gw, url="https://{{args.h}}/x"), "url"),
        (new_action(gw, timeout_s=99), "timeout_s"),
        (new_action(gw, is_admin=True), "is_admin"),  # mass assignment refused
        (new_action(gw, headers={"Host": "evil"}), "headers.Host"),
    ]
    for body, field in cases:
        r = await api(gw, "POST", "/actions", body)
        assert r.status_code == 422, body
        error = r.json()["error"]
        assert error["param"] == field and field in error["message"]
    r = await api(gw, "POST", "/actions", new_action(gw, name="Look up order"))
    assert r.status_code == 409
    assert len((await api(gw, "GET", "/actions")).json()["items"]) == 6  # nothing stored


async def test_masked_secret_sent_back_keeps_the_stored_value(gw: Gateway) -> None:
    await api(gw, "POST", "/actions", new_action(gw))
    stored = (await api(gw, "GET", "/actions/check_stock")).json()
    stored["description"] = "Check whether an item is in stock."
    r = await api(gw, "PUT", "/actions/check_stock", stored)
    assert r.status_code == 200 and r.json()["headers"]["X-Api-Key"] == MASK
    r = await api(
        gw, "POST", "/actions/check_stock/test", {"variables": {"lead": {"email": "a@b.c"}}}
    )
    assert gw.api.last().headers["X-Api-Key"] == "literal-SECRET-key-9"
    r = await api(gw, "PATCH", "/actions/check_stock", {"headers": {"X-Api-Key": "rotated-key-77"}})
    assert r.status_code == 200
    await api(gw, "POST", "/actions/check_stock/test", {"variables": {"lead.email": "a@b.c"}})
    assert gw.api.last().headers["X-Api-Key"] == "rotated-key-77"


async def test_patch_and_delete(gw: Gateway) -> None:
    r = await api(gw, "PATCH", "/actions/look_up_order", {"when_not_to_use": "Never at night."})
    assert r.status_code == 200 and r.json()["when_not_to_use"] == "Never at night."
    tools = (await api(gw, "GET", "/agents/support/tools?format=anthropic")).json()
    [order] = [t for t in tools if t["name"] == "look_up_order"]
    assert "When NOT to use: Never at night." in order["description"]
    assert (await api(gw, "DELETE", "/actions/look_up_order")).status_code == 204
    assert (await api(gw, "GET", "/actions/look_up_order")).status_code == 404
    agent = (await api(gw, "GET", "/agents/support")).json()
    assert "look_up_order" not in agent["enabled_actions"]


async def test_unknown_objects_are_404(gw: Gateway) -> None:
    for method, path in [
        ("GET", "/actions/nope"),
        ("PUT", "/agents/nope/actions/look_up_order"),
        ("PUT", "/agents/support/actions/nope"),
        ("GET", "/agents/other/tools"),
        ("GET", "/logs/nope"),
        ("DELETE", "/agents/nope"),
    ]:
        r = await api(gw, method, path)
        assert r.status_code == 404, path
        assert r.json()["error"]["code"] == "not_found"


async def test_test_endpoint_dry_run_and_live(gw: Gateway) -> None:
    r = await api(
        gw,
        "POST",
        "/actions/get_customer_account/test",
        {"variables": {"lead": {"email": "a+b@c.d"}}, "dry_run": True},
    )
    data = r.json()
    assert r.status_code == 200 and data["outcome"] == "dry_run" and gw.api.received == []
    assert data["request"]["url"].endswith("email=a%2Bb%40c.d")
    assert data["request"]["headers"]["Authorization"] == "[REDACTED]"
    r = await api(
        gw,
        "POST",
        "/actions/submit_refund/test",
        {"variables": {"lead.email": "a@b.c"}, "args": {"order_number": "A-1"}},
    )
    data = r.json()
    assert data["outcome"] == "success" and "warning" in data
    assert data["response"]["status_code"] == 200 and data["log_id"]
    assert CRM_SECRET not in r.text
    r = await api(gw, "POST", "/actions/get_customer_account/test", {"variables": {}, "bogus": 1})
    assert r.status_code == 422


async def test_logs_filters_and_paging(gw: Gateway) -> None:
    for i in range(7):
        await api(gw, "POST", "/actions/look_up_order/test", {"args": {"order_number": f"A-{i}"}})
    await api(gw, "POST", "/actions/get_customer_account/test", {})
    seen: list[str] = []
    cursor = None
    while True:
        params = {"action": "look_up_order", "limit": 3, **({"cursor": cursor} if cursor else {})}
        page = (await api(gw, "GET", "/logs", params=params)).json()
        seen += [item["id"] for item in page["items"]]
        assert all(item["action"] == "look_up_order" for item in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 7
    assert seen == sorted(seen, reverse=True)  # newest first
    rejected = (await api(gw, "GET", "/logs", params={"outcome": "rejected"})).json()["items"]
    assert [r["action"] for r in rejected] == ["get_customer_account"]
    one = (await api(gw, "GET", f"/logs/{seen[0]}")).json()
    assert one["id"] == seen[0] and one["request"]["method"] == "GET"
    big = await api(gw, "GET", "/logs", params={"limit": 5000})  # "at most 1000": capped
    assert big.status_code == 200 and len(big.json()["items"]) == 8
    assert (await api(gw, "GET", "/logs", params={"limit": 0})).status_code == 422
    assert (await api(gw, "GET", "/logs", params={"cursor": "garbage"})).status_code == 400


async def test_logs_time_range(gw: Gateway) -> None:
    for i in range(3):
        await api(gw, "POST", "/actions/look_up_order/test", {"args": {"order_number": f"A-{i}"}})
    items = (await api(gw, "GET", "/logs")).json()["items"]
    newest, middle, _oldest = (item["timestamp"] for item in items)
    ranged = await api(gw, "GET", "/logs", params={"since": middle, "until": newest})
    assert [r["timestamp"] for r in ranged.json()["items"]] == [middle]  # since in, until out
    assert [
        r["id"] for r in (await api(gw, "GET", "/logs", params={"until": middle})).json()["items"]
    ] == [items[2]["id"]]
    bad = await api(gw, "GET", "/logs", params={"since": "yesterday"})
    assert bad.status_code == 422 and "since" in bad.text


async def test_agents_crud_and_keys_are_write_only(gw: Gateway) -> None:
    r = await api(
        gw,
        "POST",
        "/agents",
        {
            "id": "sales",
            "system_prompt": "Sell.",
            "actions": ["book_a_demo"],
            "api_keys": ["k-SECRET-1"],
        },
    )
    assert r.status_code == 201
    assert r.json()["api_keys"] == [MASK] and r.json()["enabled_actions"] == ["book_a_demo"]
    r = await api(gw, "PATCH", "/agents/sales", {"system_prompt": "Sell kindly."})
    assert r.status_code == 200
    gw.upstream.script([{"content": "hi"}])
    r = await gw.client.post(
        "/v1/chat/completions",
        headers={"Authorization": "Bearer k-SECRET-1"},
        json={"model": "sales", "messages": [{"role": "user", "content": "x"}]},
    )
    assert r.status_code == 200  # the masked key sent back by PATCH did not overwrite it
    assert gw.upstream.requests[-1]["messages"][0]["content"] == "Sell kindly."
    r = await api(gw, "POST", "/agents", {"id": "x", "actions": ["nope"]})
    assert r.status_code == 422 and r.json()["error"]["param"] == "actions"
    r = await api(gw, "POST", "/agents", {"id": "y", "role": "admin"})
    assert r.status_code == 422
    assert (await api(gw, "DELETE", "/agents/sales")).status_code == 204
    models = (await gw.client.get("/v1/models")).json()["data"]
    assert "sales" not in [m["id"] for m in models]


async def test_changes_survive_a_restart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACTIONGATE_ADMIN_TOKEN", TOKEN)
    async with running_gateway(tmp_path) as gw:
        await api(gw, "POST", "/actions", new_action(gw))
        await api(gw, "DELETE", "/actions/look_up_order")
    async with running_gateway(tmp_path) as gw:
        names = [a["tool_name"] for a in (await api(gw, "GET", "/actions")).json()["items"]]
        assert "check_stock" in names and "look_up_order" not in names


async def test_openapi_document_lists_the_admin_routes(gw: Gateway) -> None:
    doc = (await gw.client.get("/openapi.json")).json()
    paths = doc["paths"]
    for path in [
        "/api/actions",
        "/api/actions/{tool_name}",
        "/api/actions/{tool_name}/test",
        "/api/agents/{agent_id}/actions/{tool_name}",
        "/api/logs",
        "/api/logs/{record_id}",
        "/api/agents/{agent_id}/tools",
    ]:
        assert path in paths, path
    assert set(paths["/api/actions/{tool_name}"]) == {"get", "put", "patch", "delete"}
    assert json.dumps(doc)  # serialisable
