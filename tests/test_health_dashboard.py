"""Health checks on the dashboard: a badge per action in the list, the latest result and the
history on the action's page, "Run check now" behind the session's CSRF token, and
``health_check`` edited in the wizard."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.gateway import Gateway, running_gateway

TOKEN = "admin-SECRET-token-hd"


@pytest.fixture
async def gw(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Gateway]:
    monkeypatch.setenv("ACTIONGATE_ADMIN_TOKEN", TOKEN)
    async with running_gateway(tmp_path) as gateway:
        yield gateway


async def login(client: httpx.AsyncClient) -> str:
    """Log the in-process browser in; the admin session's CSRF token."""
    page = await client.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf
    done = await client.post("/login", data={"csrf": csrf.group(1), "token": TOKEN})
    assert done.status_code == 303
    page = await client.get("/actions")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf
    return csrf.group(1)


def flaky(gw: Gateway) -> dict[str, Any]:
    return {
        "name": "Flaky",
        "url": f"{gw.api.base_url}/flaky",
        "retries": 0,
        "health_check": {"every": "1m"},
    }


def badge(page: str, tool: str) -> str:
    row = re.search(rf"<code>{tool}</code>.*?</tr>", page, re.S)
    assert row, tool
    found = re.search(r'class="badge[^"]*">([^<]+)<', row.group())
    assert found
    return found.group(1)


async def test_badges_go_from_not_run_to_failing_to_healthy(gw: Gateway) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    assert (await gw.client.post("/api/actions", json=flaky(gw), headers=headers)).is_success
    csrf = await login(gw.client)
    page = (await gw.client.get("/actions")).text
    assert badge(page, "flaky") == "not run yet"
    assert badge(page, "look_up_order") == "no check"

    gw.api.fail_times = 1
    refused = await gw.client.post("/actions/flaky/health/run", data={"csrf": "wrong"})
    assert refused.status_code == 403 and gw.api.received == []
    ran = await gw.client.post("/actions/flaky/health/run", data={"csrf": csrf})
    assert ran.status_code == 303 and len(gw.api.received) == 1
    assert badge((await gw.client.get("/actions")).text, "flaky") == "failing"

    await gw.client.post("/actions/flaky/health/run", data={"csrf": csrf})
    assert badge((await gw.client.get("/actions")).text, "flaky") == "healthy"
    page = (await gw.client.get(ran.headers["location"])).text
    assert "Health check run." in page and "Run check now" in page
    history = page.split('aria-label="Health check history"', 1)[1].split("</table>", 1)[0]
    assert history.count("<tr>") == 3  # the header and two results, newest first
    assert history.index("healthy") < history.index("failing")
    assert "HTTP 503, expected a 2xx status" in history


async def test_an_action_without_a_check_says_so(gw: Gateway) -> None:
    csrf = await login(gw.client)
    page = (await gw.client.get("/actions/look_up_order")).text
    assert "has no <code>health_check</code>" in page and "Run check now" not in page
    ran = await gw.client.post("/actions/look_up_order/health/run", data={"csrf": csrf})
    assert ran.status_code == 422 and "has no health_check" in ran.text
    missing = await gw.client.post("/actions/nope/health/run", data={"csrf": csrf})
    assert missing.status_code == 404


async def test_the_wizard_edits_the_health_check_and_keeps_it(gw: Gateway) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    await gw.client.post("/api/actions", json=flaky(gw), headers=headers)
    csrf = await login(gw.client)
    edit = (await gw.client.get("/actions/flaky/edit")).text
    shown = re.search(r'<input id="health_every" name="health_every" value="([^"]*)"', edit)
    assert shown and shown.group(1) == "60"
    assert re.search(r'id="health_on" name="health_on" checked', edit)
    form = {
        "csrf": csrf,
        "name": "Flaky",
        "method": "GET",
        "url": f"{gw.api.base_url}/flaky",
        "health_on": "on",
        "health_every": "2m",
        "health_expect_status": "200, 204",
    }
    saved = await gw.client.post("/actions/flaky/edit", data=form)
    assert saved.status_code == 303
    stored = (await gw.client.get("/api/actions/flaky", headers=headers)).json()
    assert stored["health_check"]["every"] == 120
    assert stored["health_check"]["expect_status"] == [200, 204]
    bad = await gw.client.post("/actions/flaky/edit", data={**form, "health_every": "1"})
    assert bad.status_code == 422 and "health_check.every" in bad.text
