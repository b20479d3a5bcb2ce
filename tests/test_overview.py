"""The Overview page and ``GET /api/stats``: the admin session / token, the windows, a bad window
named in a 400, and the numbers of traffic sent through the proxy."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from gateway.stores.logs import new_record
from tests.support.gateway import Gateway, running_gateway

TOKEN = "admin-SECRET-token-ov"
HEADERS = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
async def gw(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Gateway]:
    monkeypatch.setenv("ACTIONGATE_ADMIN_TOKEN", TOKEN)
    async with running_gateway(tmp_path) as gateway:
        yield gateway


async def login(client: httpx.AsyncClient) -> httpx.Response:
    """Log the in-process browser in; the answer to the login form."""
    page = await client.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf
    return await client.post("/login", data={"csrf": csrf.group(1), "token": TOKEN})


async def traffic(gw: Gateway) -> None:
    """Two lookups through the proxy (one succeeds, one is refused for a bad argument)."""
    gw.upstream.script(
        [
            {"tool_calls": [{"name": "look_up_order", "arguments": {"order_number": "A-00001"}}]},
            {"tool_calls": [{"name": "look_up_order", "arguments": {"order_number": 5}}]},
            {"content": "Done."},
        ]
    )
    r = await gw.chat(messages=[{"role": "user", "content": "where is my order?"}])
    assert r.status_code == 200, r.text


def totals(page: str) -> dict[str, str]:
    found = dict(re.findall(r'<dd id="total-([a-z-]+)">([^<]*)</dd>', page))
    assert found, page
    return found


async def test_login_lands_on_the_overview_and_the_nav_marks_it(gw: Gateway) -> None:
    done = await login(gw.client)
    assert (done.status_code, done.headers["location"]) == (303, "/overview")
    home = await gw.client.get("/")
    assert (home.status_code, home.headers["location"]) == (303, "/overview")
    page = await gw.client.get("/overview")
    assert page.status_code == 200
    assert '<a href="/overview" aria-current="page">Overview</a>' in page.text
    assert '<a href="/actions">Custom Actions</a>' in page.text  # still there, not current
    assert "Content-Security-Policy" in page.headers
    assert "style=" not in page.text and "<script" not in page.text
    actions = await gw.client.get("/actions")
    assert '<a href="/actions" aria-current="page">Custom Actions</a>' in actions.text


async def test_without_a_session_the_overview_sends_to_the_login(gw: Gateway) -> None:
    r = await gw.client.get("/overview")
    assert (r.status_code, r.headers["location"]) == (303, "/login")
    assert (await gw.client.get("/")).headers["location"] == "/overview"  # which then logs in


async def test_the_page_counts_the_proxy_traffic_per_action_and_agent(gw: Gateway) -> None:
    await login(gw.client)
    before = totals((await gw.client.get("/overview")).text)
    assert before == {"executions": "0", "success-rate": "-", "refusals": "0"}
    await traffic(gw)
    page = (await gw.client.get("/overview?window=1h")).text
    assert totals(page) == {"executions": "2", "success-rate": "50.0 %", "refusals": "1"}
    assert '<a href="/overview?window=1h" aria-current="page">Last 1 hour</a>' in page
    row = re.search(r'<a href="/logs\?action=look_up_order">look_up_order</a>.*?</tr>', page, re.S)
    assert row, page
    cells = re.findall(r'data-label="([^"]+)">([^<]*)<', row.group())
    assert dict(cells)["Executions"] == "2" and dict(cells)["Success rate"] == "50.0 %"
    assert dict(cells)["Refusals"] == "1"
    assert "<td>rejected</td>" not in page and "invalid call" in page
    # Three charts, each an image with a title and a description of its numbers.
    assert page.count('role="img"') == 3
    assert (
        "Executions per minute (UTC)" in page and "1 successes, 0 failures and 1 refusals" in page
    )
    assert "look_up_order 2" in page  # the per-action bars' description

    other = (await gw.client.get("/overview?window=7d&agent=nobody")).text
    assert totals(other)["executions"] == "0"
    assert (
        "<option selected>support</option>" in (await gw.client.get("/overview?agent=support")).text
    )


async def test_an_unknown_window_is_a_400_naming_it(gw: Gateway) -> None:
    await login(gw.client)
    page = await gw.client.get("/overview?window=2h")
    assert page.status_code == 400
    assert "unknown window &#39;2h&#39;: use one of 1h, 24h, 7d" in page.text
    assert 'role="alert"' in page.text and 'role="img"' not in page.text

    api = await gw.client.get("/api/stats?window=2h", headers=HEADERS)
    assert api.status_code == 400
    error = api.json()["error"]
    assert error["message"] == "unknown window '2h': use one of 1h, 24h, 7d"
    assert error["param"] == "window"
    nul = await gw.client.get("/api/stats?agent=a%00b", headers=HEADERS)
    assert nul.status_code == 400 and nul.json()["error"]["param"] == "agent"
    page = await gw.client.get("/overview?agent=a%00b")
    assert page.status_code == 400 and "agent contains a NUL character" in page.text


@pytest.mark.parametrize("token", [None, "wrong", TOKEN + "x"])
async def test_the_stats_api_needs_the_admin_token(gw: Gateway, token: str | None) -> None:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    r = await gw.client.get("/api/stats", headers=headers)
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"


async def test_the_stats_api_gives_the_pages_numbers(gw: Gateway) -> None:
    store = gw.services.runtime.logstore
    old = new_record(action="look_up_order", outcome="success", request={}, agent_id="support")
    old.timestamp = datetime.now(UTC) - timedelta(hours=30)
    store.submit(old)
    await traffic(gw)
    day = (await gw.client.get("/api/stats", headers=HEADERS)).json()
    assert day["window"] == "24h" and day["series"]["slot_seconds"] == 3600
    assert day["totals"]["executions"] == 2 and day["totals"]["success_rate"] == 0.5
    (action,) = day["per_action"]
    assert action["key"] == "look_up_order" and action["outcomes"] == {"rejected": 1, "success": 1}
    assert action["p50_ms"] is not None and action["injected_share"] == 1.0
    assert [a["key"] for a in day["per_agent"]] == ["support"]
    assert day["refusals"] == [{"outcome": "rejected", "reason": "invalid_call", "count": 1}]
    assert sum(p["successes"] + p["refusals"] for p in day["series"]["points"]) == 2

    week = (await gw.client.get("/api/stats?window=7d", headers=HEADERS)).json()
    assert week["totals"]["executions"] == 3  # the record of 30 hours ago too
    nobody = (await gw.client.get("/api/stats?window=7d&agent=sales", headers=HEADERS)).json()
    assert nobody["totals"]["executions"] == 0 and nobody["agent"] == "sales"


async def test_a_declined_confirmation_counts_as_a_refusal_with_its_reason(gw: Gateway) -> None:
    call = {"name": "submit_refund", "arguments": {"order_number": "A-7"}, "id": "call_no"}
    gw.upstream.script([{"tool_calls": [call]}])
    conv = {"id": "c-declined", "lead": {"email": "j@x.io"}}
    user = [{"role": "user", "content": "refund my order"}]
    first = (await gw.chat(messages=user, conversation=conv)).json()
    history = [
        *user,
        first["choices"][0]["message"],
        {"role": "tool", "tool_call_id": "call_no", "content": '{"confirmed": false}'},
    ]
    gw.upstream.script([{"content": "OK, nothing was refunded."}])
    await gw.chat(messages=history, conversation=conv)

    stats = (await gw.client.get("/api/stats?window=1h", headers=HEADERS)).json()
    (refund,) = [a for a in stats["per_action"] if a["key"] == "submit_refund"]
    # The question to the customer is counted apart; the answer is the one execution.
    assert refund["pending"] == 1 and refund["executions"] == 1 and refund["refusals"] == 1
    assert refund["outcomes"] == {"declined": 1, "pending_confirmation": 1}
    assert stats["refusals"] == [{"outcome": "declined", "reason": "customer_declined", "count": 1}]
