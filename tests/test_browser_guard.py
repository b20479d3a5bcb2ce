"""The Host, Origin and Content-Type rules, on a bare app behind :class:`BrowserGuard`."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gateway.net.browser import (
    ORIGIN_SCOPE_KEY,
    BrowserGuard,
    BrowserPolicy,
    CrossOrigin,
    default_allowed_hosts,
    host_allowed,
)

WIDGET = "https://shop.example.com"
ADMIN_UI = "https://ops.example.com"


def _app(policy: BrowserPolicy, seen: list[dict[str, Any]]) -> BrowserGuard:
    async def endpoint(request: Request) -> JSONResponse:
        seen.append({"path": request.url.path, "agent_origin": request.scope.get(ORIGIN_SCOPE_KEY)})
        return JSONResponse({"ran": True})

    routes = [
        Route(path, endpoint, methods=["GET", "POST"])
        for path in (
            "/v1/chat/completions",
            "/api/actions",
            "/mcp/support",
            "/mcp/billing",
            "/actions/new",
        )
    ]
    return BrowserGuard(Starlette(routes=routes), lambda: policy)


def _client(policy: BrowserPolicy, seen: list[dict[str, Any]], host: str = "127.0.0.1:8080"):
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=_app(policy, seen)), base_url=f"http://{host}"
    )


LOOPBACK = BrowserPolicy(allowed_hosts=default_allowed_hosts("127.0.0.1", None))


@pytest.mark.parametrize(
    ("host", "ok"),
    [
        ("127.0.0.1:8080", True),
        ("localhost:9999", True),
        ("[::1]:8080", True),
        ("LOCALHOST", True),
        ("evil.example:8080", False),
        ("127.0.0.1.evil.example", False),
        ("", False),
    ],
)
async def test_loopback_bind_answers_only_loopback_hosts(host: str, ok: bool) -> None:
    seen: list[dict[str, Any]] = []
    async with _client(LOOPBACK, seen) as client:
        response = await client.get("/v1/chat/completions", headers={"host": host})
    assert response.status_code == (200 if ok else 421)
    assert len(seen) == (1 if ok else 0)
    if not ok:
        assert response.json()["error"]["code"] == "misdirected_request"


def test_host_entries() -> None:
    assert host_allowed("api.example.com:443", ["api.example.com:443"])
    assert not host_allowed("api.example.com:8443", ["api.example.com:443"])
    assert host_allowed("eu.example.com", ["*.example.com"])
    assert not host_allowed("example.com", ["*.example.com"])
    assert not host_allowed("badexample.com", ["*.example.com"])
    assert host_allowed("anything", ["*"])
    assert default_allowed_hosts("0.0.0.0", None) == []  # serve warns about this one
    assert default_allowed_hosts("0.0.0.0", ["gw.example.com"]) == ["gw.example.com"]
    assert default_allowed_hosts("::1", None) == ["localhost", "127.0.0.1", "[::1]"]


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/api/actions", "/mcp/support"])
async def test_a_foreign_origin_runs_nothing(path: str) -> None:
    seen: list[dict[str, Any]] = []
    async with _client(LOOPBACK, seen) as client:
        response = await client.post(
            path, json={"model": "support"}, headers={"origin": "http://evil.example"}
        )
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "origin_not_allowed"
    assert "access-control-allow-origin" not in response.headers
    assert seen == []


async def test_a_dashboard_form_from_another_site_is_refused() -> None:
    seen: list[dict[str, Any]] = []
    async with _client(LOOPBACK, seen) as client:
        foreign = await client.post(
            "/actions/new", data={"name": "x"}, headers={"origin": "http://evil.example"}
        )
        own = await client.post(
            "/actions/new", data={"name": "x"}, headers={"origin": "http://127.0.0.1:8080"}
        )
    assert foreign.status_code == 403 and foreign.headers["content-type"].startswith("text/plain")
    assert own.status_code == 200
    assert seen == [{"path": "/actions/new", "agent_origin": None}]


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded", None])
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/api/actions"])
async def test_json_routes_refuse_bodies_that_are_not_json(path: str, ctype: str | None) -> None:
    seen: list[dict[str, Any]] = []
    headers = {"content-type": ctype} if ctype else {}
    async with _client(LOOPBACK, seen) as client:
        response = await client.post(path, content=b'{"model": "support"}', headers=headers)
    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"
    assert seen == []


async def test_json_bodies_and_bodiless_requests_pass() -> None:
    seen: list[dict[str, Any]] = []
    async with _client(LOOPBACK, seen) as client:
        plain = await client.post(
            "/v1/chat/completions",
            content=b"{}",
            headers={"content-type": "application/json; charset=utf-8"},
        )
        listing = await client.get("/api/actions")
    assert (plain.status_code, listing.status_code) == (200, 200)
    assert len(seen) == 2


async def test_an_allowed_origin_gets_real_cors_for_that_origin_only() -> None:
    policy = BrowserPolicy(allowed_hosts=["127.0.0.1"], allow_origins=[ADMIN_UI])
    seen: list[dict[str, Any]] = []
    async with _client(policy, seen) as client:
        preflight = await client.options(
            "/api/actions",
            headers={
                "origin": ADMIN_UI,
                "access-control-request-method": "POST",
                "access-control-request-headers": "authorization, content-type",
            },
        )
        actual = await client.post("/api/actions", json={}, headers={"origin": ADMIN_UI})
        other = await client.post("/api/actions", json={}, headers={"origin": WIDGET})
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == ADMIN_UI
    assert preflight.headers["vary"] == "Origin"
    allowed_headers = preflight.headers["access-control-allow-headers"]
    assert "authorization" in allowed_headers and "content-type" in allowed_headers
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert "access-control-allow-credentials" not in preflight.headers
    assert actual.status_code == 200
    assert actual.headers["access-control-allow-origin"] == ADMIN_UI
    assert "x-actiongate-conversation-id" in actual.headers["access-control-expose-headers"]
    assert other.status_code == 403
    assert len(seen) == 1  # the preflight reached no route


def _agent_origins(agent: str | None) -> set[str]:
    by_agent = {"support": {WIDGET + "/"}, "billing": set()}
    return set().union(*by_agent.values()) if agent is None else by_agent.get(agent, set())


async def test_an_agent_origin_opens_the_agent_fronts_only_and_is_left_for_the_agent() -> None:
    policy = BrowserPolicy(allowed_hosts=["127.0.0.1"], agent_origins=_agent_origins)
    seen: list[dict[str, Any]] = []
    async with _client(policy, seen) as client:
        chat = await client.post("/v1/chat/completions", json={}, headers={"origin": WIDGET})
        admin = await client.post("/api/actions", json={}, headers={"origin": WIDGET})
        mcp = await client.post("/mcp/support", json={}, headers={"origin": WIDGET})
        other_agent = await client.post("/mcp/billing", json={}, headers={"origin": WIDGET})
    assert chat.status_code == 200 and chat.headers["access-control-allow-origin"] == WIDGET
    assert mcp.status_code == 200
    assert admin.status_code == 403
    assert other_agent.status_code == 403  # the MCP path names the agent: checked here
    left = CrossOrigin(WIDGET, everywhere=False)
    assert seen == [
        {"path": "/v1/chat/completions", "agent_origin": left},
        {"path": "/mcp/support", "agent_origin": left},
    ]
    assert left.allows({WIDGET}) and not left.allows({ADMIN_UI})
    assert CrossOrigin(ADMIN_UI, everywhere=True).allows(set())


async def test_the_null_origin_is_never_allowed() -> None:
    policy = BrowserPolicy(allow_origins=["null"], agent_origins=lambda _agent: {"null"})
    seen: list[dict[str, Any]] = []
    async with _client(policy, seen) as client:
        response = await client.post("/v1/chat/completions", json={}, headers={"origin": "null"})
    assert response.status_code == 403
    assert seen == []
