"""Browser-facing safety of the whole app: Host, Origin and Content-Type on every route family.

The app is built as ``serve --host 127.0.0.1`` builds it, so the loopback Host rule is in force;
requests come in through the ASGI transport with the headers a browser (or a rebinding page)
would send. Every refusal is checked for its side effects too: no upstream call, no action call,
no execution record.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.definitions.config import parse_config
from gateway.errors import ConfigError
from tests.support.gateway import Gateway, running_gateway
from tests.support.serve import free_port

TOKEN = "admin-token-for-browser-safety-tests"
SHOP = "https://shop.example.com"
OPS = "https://ops.example.com"
EVIL = "http://evil.example"
WIDGET_KEY = "pk_public_widget_key"
SERVER_KEY = "sk_server_side_key_1"
CHAT = {"model": "support", "messages": [{"role": "user", "content": "hi"}]}

# One representative route per family: method, path, JSON body or None.
ROUTES = [
    ("POST", "/v1/chat/completions", CHAT),
    ("POST", "/v1/responses", {"model": "support", "input": "Hi"}),
    ("POST", "/v1/messages", {"model": "support", "max_tokens": 9, "messages": CHAT["messages"]}),
    ("GET", "/v1/models", None),
    ("GET", "/api/actions", None),
    ("POST", "/api/actions", {"name": "x"}),
    ("GET", "/", None),
    ("GET", "/login", None),
    ("POST", "/login", None),
    ("POST", "/mcp/support", {"jsonrpc": "2.0", "id": 1, "method": "ping"}),
    ("GET", "/healthz", None),
]


@pytest.fixture
async def gw(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Gateway]:
    monkeypatch.setenv("ACTIONGATE_ADMIN_TOKEN", TOKEN)
    async with running_gateway(
        tmp_path,
        bind_host="127.0.0.1",
        base_url="http://127.0.0.1:8080",
        settings={"cors": {"allow_origins": [OPS]}},
        cors_origins=[SHOP],
        more_agents=[
            {
                "id": "widget",
                "cors_origins": [SHOP],
                "widget_keys": [WIDGET_KEY],
                "api_keys": [SERVER_KEY],
                "widget_rate": {"requests": 2, "per_s": 60},
            },
            {"id": "internal", "system_prompt": "Staff only."},
        ],
    ) as gateway:
        yield gateway


def _auth(path: str) -> dict[str, str]:
    return {"authorization": f"Bearer {TOKEN}"} if path.startswith("/api/") else {}


async def _send(
    gw: Gateway, method: str, path: str, body: Any, headers: dict[str, str]
) -> httpx.Response:
    return await gw.client.request(method, path, json=body, headers={**_auth(path), **headers})


async def _nothing_ran(gw: Gateway) -> None:
    assert gw.upstream.requests == []
    assert gw.api.received == []
    store = gw.services.runtime.logstore
    await store.flush()
    assert (await store.query())[0] == []


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
async def test_a_rebound_host_is_refused_on_every_route(
    gw: Gateway, method: str, path: str, body: Any
) -> None:
    response = await _send(gw, method, path, body, {"host": "evil.example:8080"})
    assert response.status_code == 421
    assert "allowed_hosts" in response.text
    await _nothing_ran(gw)


@pytest.mark.parametrize("host", ["127.0.0.1:8080", "localhost:1234", "[::1]:8080"])
async def test_loopback_names_are_served_on_any_port(gw: Gateway, host: str) -> None:
    response = await gw.client.get("/healthz", headers={"host": host})
    assert response.status_code == 200


@pytest.mark.parametrize(("method", "path", "body"), [r for r in ROUTES if r[0] == "POST"])
async def test_a_foreign_origin_is_refused_on_every_route_that_acts(
    gw: Gateway, method: str, path: str, body: Any
) -> None:
    response = await _send(gw, method, path, body, {"origin": EVIL})
    assert response.status_code == 403
    assert "access-control-allow-origin" not in response.headers
    await _nothing_ran(gw)


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/responses", "/api/actions"])
@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None],
)
async def test_a_body_that_is_not_json_is_refused_with_415(
    gw: Gateway, path: str, content_type: str | None
) -> None:
    headers = {**_auth(path), **({"content-type": content_type} if content_type else {})}
    response = await gw.client.post(path, content=b'{"model": "support"}', headers=headers)
    assert response.status_code == 415
    error = response.json()["error"]  # the front's (OpenAI's) error shape
    assert error["code"] == "unsupported_media_type" and "application/json" in error["message"]
    await _nothing_ran(gw)


@pytest.mark.parametrize(("status", "headers"), [(415, {}), (403, {"origin": EVIL})])
async def test_messages_front_refusals_come_in_anthropics_shape(
    gw: Gateway, status: int, headers: dict[str, str]
) -> None:
    body = b'{"model": "support", "max_tokens": 5, "messages": []}'
    if status == 403:
        headers = {**headers, "content-type": "application/json"}
    response = await gw.client.post("/v1/messages", content=body, headers=headers)
    assert response.status_code == status
    answer = response.json()
    assert answer["type"] == "error"
    assert answer["error"]["type"] == (
        "permission_error" if status == 403 else "invalid_request_error"
    )
    await _nothing_ran(gw)


async def test_mcp_keeps_refusing_a_body_that_is_not_json(gw: Gateway) -> None:
    response = await gw.client.post(
        "/mcp/support",
        content=b'{"jsonrpc": "2.0", "id": 1, "method": "ping"}',
        headers={"content-type": "text/plain", "accept": "application/json, text/event-stream"},
    )
    assert 400 <= response.status_code < 500
    await _nothing_ran(gw)


async def test_the_dashboard_takes_its_own_origin_only(gw: Gateway) -> None:
    same = await gw.client.post(
        "/login", data={"token": "x"}, headers={"origin": "http://127.0.0.1:8080"}
    )
    assert "form token" in same.text  # past the guard: the dashboard's own CSRF rule answers
    for origin in (OPS, SHOP, "null"):
        response = await gw.client.post("/login", data={"token": "x"}, headers={"origin": origin})
        assert response.status_code == 403, origin  # cors.allow_origins opens JSON routes only
        assert "cross-origin" in response.text


async def test_a_globally_allowed_origin_gets_cors_on_the_admin_api(gw: Gateway) -> None:
    preflight = await gw.client.options(
        "/api/actions",
        headers={
            "origin": OPS,
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization, content-type",
        },
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == OPS
    assert preflight.headers["vary"] == "Origin"
    assert "access-control-allow-credentials" not in preflight.headers
    listed = await gw.client.get("/api/actions", headers={**_auth("/api/"), "origin": OPS})
    assert listed.status_code == 200 and listed.headers["access-control-allow-origin"] == OPS
    assert listed.json()["items"]


async def test_an_agent_origin_works_for_its_agent_only(gw: Gateway) -> None:
    gw.upstream.script([{"content": "Hello from the widget."}])
    ok = await gw.client.post(
        "/v1/chat/completions",
        json={**CHAT, "model": "widget"},
        headers={"origin": SHOP, "authorization": f"Bearer {WIDGET_KEY}"},
    )
    assert ok.status_code == 200, ok.text
    assert ok.headers["access-control-allow-origin"] == SHOP
    assert ok.headers["x-actiongate-conversation-id"] == ok.json()["actiongate"]["conversation_id"]
    assert "x-actiongate-conversation-id" in ok.headers["access-control-expose-headers"]
    # The shop's pages may not drive an agent that does not list the shop.
    gw.upstream.requests.clear()
    refused = await gw.client.post(
        "/v1/chat/completions", json={**CHAT, "model": "internal"}, headers={"origin": SHOP}
    )
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "origin_not_allowed"
    assert "internal" in refused.json()["error"]["message"]
    assert gw.upstream.requests == []


async def test_a_widget_key_works_only_from_the_agents_pages(gw: Gateway) -> None:
    chat = {**CHAT, "model": "widget"}
    widget = {"authorization": f"Bearer {WIDGET_KEY}"}
    from_server = await gw.client.post("/v1/chat/completions", json=chat, headers=widget)
    assert from_server.status_code == 401  # a public key copied out of the page
    from_elsewhere = await gw.client.post(
        "/v1/chat/completions", json=chat, headers={**widget, "origin": EVIL}
    )
    assert from_elsewhere.status_code == 403
    no_key = await gw.client.post("/v1/chat/completions", json=chat, headers={"origin": SHOP})
    assert no_key.status_code == 401
    await _nothing_ran(gw)
    gw.upstream.script([{"content": "Server side."}])
    server = await gw.client.post(
        "/v1/chat/completions", json=chat, headers={"authorization": f"Bearer {SERVER_KEY}"}
    )
    assert server.status_code == 200  # the agent's api key needs no origin


async def test_widget_rate_limits_each_address(gw: Gateway) -> None:
    chat = {**CHAT, "model": "widget"}
    headers = {"origin": SHOP, "authorization": f"Bearer {WIDGET_KEY}"}
    gw.upstream.script([{"content": "one"}, {"content": "two"}])
    for _ in range(2):
        assert (
            await gw.client.post("/v1/chat/completions", json=chat, headers=headers)
        ).status_code == 200
    limited = await gw.client.post("/v1/chat/completions", json=chat, headers=headers)
    assert limited.status_code == 429
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    assert limited.json()["error"]["type"] == "rate_limit_error"
    assert limited.headers["access-control-allow-origin"] == SHOP  # the page can read why
    assert len(gw.upstream.requests) == 2
    server = {"authorization": f"Bearer {SERVER_KEY}"}
    gw.upstream.script([{"content": "server"}])
    assert (
        await gw.client.post("/v1/chat/completions", json=chat, headers=server)
    ).status_code == 200


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"cors": {"allow_origins": ["*"]}}, "wildcard is not accepted"),
        ({"cors": {"allow_origins": ["https://shop.example.com/chat"]}}, "without a path"),
        ({"allowed_hosts": []}, "allowed_hosts"),
        ({"allowed_hosts": ["gw example"]}, "is not a host"),
        ({"agents": [{"id": "a", "widget_keys": ["pk"]}]}, "cors_origins"),
        ({"agents": [{"id": "a", "cors_origins": ["ftp://x"]}]}, "is not an origin"),
    ],
)
def test_bad_browser_settings_are_refused_naming_them(
    settings: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(settings, environ={})


def test_serve_warns_when_bound_beyond_loopback_without_allowed_hosts(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[1]
    command = [
        str(Path(sys.executable).parent / "actiongate"),
        "serve",
        "--config",
        str(root / "examples" / "demo.yaml"),
        "--host",
        "0.0.0.0",
        "--port",
        str(free_port()),
        "--db",
        f"sqlite:///{tmp_path / 'warn.db'}",
    ]
    env = {**os.environ, "ACTIONGATE_ADMIN_TOKEN": TOKEN}
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    ) as serve:
        assert serve.stdout is not None
        ready = serve.stdout.readline()  # the ready line, once it listens (or "" if it died)
        serve.terminate()
        _, stderr = serve.communicate(timeout=30)
    assert "listening on" in ready, stderr
    warnings = [line for line in stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "allowed_hosts" in warnings[0], stderr
