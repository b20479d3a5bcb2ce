"""Hardening of the dashboard (issue 12, items 2, 3, 20-23), each finding replayed as the attack.

2.  ``/login`` and every dashboard form POST: no body is read before the session is checked,
    none past the cap (declared or chunked) — the ASGI ``receive`` calls in process, and the
    peak memory of a real ``actiongate serve``.
3.  Wrong admin tokens back off per client address on ``/api`` and ``/login`` (429 with
    ``Retry-After``), never locking out the admin at another address.
20. Bidi controls in customer or API text are shown as escapes on the Logs page.
21. The Playground chats on the admin session with an agent that has client keys, and sends
    lead fields, user id and channel in the ``conversation`` object.
22. CSRF tokens are compared in constant time; the session cookie is signed by itsdangerous
    with an HKDF-derived key.
23. An unknown dashboard URL gets an HTML page with the sidebar; the API's 404s stay JSON.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import orjson
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from fastapi import FastAPI
from itsdangerous import TimestampSigner, URLSafeTimedSerializer
from starlette.requests import Request

from examples.scripted_upstream import ScriptedUpstream, running_upstream
from gateway.admin import backoff as backoff_module
from gateway.admin.backoff import Backoff, client_address
from gateway.admin.dashboard import session as session_module
from gateway.admin.dashboard.pages import MAX_FORM_BYTES
from gateway.admin.dashboard.session import COOKIE, MAX_AGE_S
from gateway.app import Services, create_app
from gateway.definitions.config import parse_config
from gateway.net.inbound import MAX_REQUEST_BYTES
from tests.support.action_api import ActionAPI, running_api
from tests.support.gateway import CRM_SECRET, UPSTREAM_KEY, actions
from tests.support.huge_body import CHUNK, peak_rss_kib, post_huge
from tests.support.serve import start_gateway
from tests.test_hardening_access import HUGE, asgi_post

FORM = "application/x-www-form-urlencoded"

TOKEN = "admin-SECRET-token-h6"
CLIENT_KEY = "client-SECRET-key-h6"
ADMIN_ADDRESS = "198.51.100.2"
ATTACKER = "203.0.113.7"
FORM_POSTS = (
    "/logout",
    "/actions/new",
    "/actions/look_up_order/edit",
    "/actions/look_up_order/test",
    "/actions/look_up_order/health/run",
    "/actions/look_up_order/delete",
    "/secrets",
    "/secrets/CRM/delete",
    "/agents/support/actions",
)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class GW:
    app: FastAPI
    upstream: ScriptedUpstream
    api: ActionAPI
    services: Services
    clock: Clock
    clients: dict[str, httpx.AsyncClient] = field(default_factory=dict)

    def client(self, address: str = ADMIN_ADDRESS) -> httpx.AsyncClient:
        """A browser at ``address`` (its own cookies)."""
        if address not in self.clients:
            transport = httpx.ASGITransport(app=self.app, client=(address, 50000))
            self.clients[address] = httpx.AsyncClient(transport=transport, base_url="http://gw")
        return self.clients[address]

    async def pre_login(self, address: str = ADMIN_ADDRESS) -> str:
        """Open the login page: the browser gets its first session; the form's CSRF token."""
        page = await self.client(address).get("/login")
        match = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert match, page.text
        return match.group(1)

    async def login(self, address: str = ADMIN_ADDRESS, token: str = TOKEN) -> httpx.Response:
        csrf = await self.pre_login(address)
        return await self.client(address).post("/login", data={"csrf": csrf, "token": token})

    async def admin_csrf(self, address: str = ADMIN_ADDRESS) -> str:
        """Log in; the admin session's CSRF token."""
        assert (await self.login(address)).status_code == 303
        page = await self.client(address).get("/actions")
        match = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert match, page.text
        return match.group(1)

    def cookie(self, address: str = ADMIN_ADDRESS) -> str:
        return f"{COOKIE}={self.client(address).cookies[COOKIE]}"


def lead_echo(base: str) -> dict[str, Any]:
    """An action whose request carries every conversation variable the Playground sets."""
    query = (
        "email={{lead.email}}&name={{lead.name}}&plan={{lead.plan}}"
        "&user={{conversation.user_id}}&channel={{conversation.channel}}"
    )
    return {"name": "Lead echo", "url": f"{base}/echo/lead?{query}"}


def add_note(base: str) -> dict[str, Any]:
    """An action that sends customer text to the API at once, which echoes it back."""
    return {
        "name": "Add note",
        "method": "POST",
        "url": f"{base}/echo/notes",
        "body": {"note": "{{lead.note}}"},
        "confirm": False,
    }


@asynccontextmanager
async def gateway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[GW]:
    """The app in process (lifespan on), an open agent and one with client keys."""
    monkeypatch.setenv("ACTIONGATE_ADMIN_TOKEN", TOKEN)
    async with running_api() as api, running_upstream(api_key=UPSTREAM_KEY) as upstream:
        config = parse_config(
            {
                "upstream": {"base_url": upstream.base_url, "api_key": UPSTREAM_KEY, "model": "m1"},
                "database": f"sqlite:///{tmp_path / 'gw.db'}",
                "egress": {"allow": ["127.0.0.1"]},
                "secrets": {"CRM": CRM_SECRET},
                "agents": [
                    {"id": "support", "system_prompt": "You are the support assistant."},
                    {"id": "locked", "system_prompt": "Private.", "api_keys": [CLIENT_KEY]},
                ],
                "actions": [
                    *actions(api.base_url),
                    lead_echo(api.base_url),
                    add_note(api.base_url),
                ],
            },
            environ={},
        )
        app = create_app(config)
        async with app.router.lifespan_context(app):
            clock = Clock()
            app.state.admin_backoff = Backoff(clock=clock)
            gw = GW(app, upstream, api, app.state.services, clock)
            try:
                yield gw
            finally:
                for client in gw.clients.values():
                    await client.aclose()


def tool_call(name: str, arguments: dict[str, Any], id: str) -> dict[str, Any]:
    return {"tool_calls": [{"name": name, "arguments": arguments, "id": id}]}


# --- 2. no body before the session, none past the cap -----------------------------------------


@pytest.mark.parametrize("declare", [True, False], ids=["content-length", "chunked"])
async def test_dashboard_posts_without_a_session_are_refused_unread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, declare: bool
) -> None:
    async with gateway(tmp_path, monkeypatch) as gw:
        for path in ("/login", *FORM_POSTS):
            anonymous = await asgi_post(gw.app, path, {}, HUGE, declare=declare)
            assert anonymous.status == 403, (path, anonymous.body)
            assert anonymous.receive_calls == 0, path  # not one byte was pulled
        chat = await asgi_post(gw.app, "/playground/chat", {}, HUGE, declare=declare)
        assert (chat.status, chat.receive_calls) == (401, 0)
        # The login page's session is not an admin one: every admin form refuses it unread.
        await gw.pre_login()
        visitor = {"cookie": gw.cookie()}
        for path in FORM_POSTS:
            refused = await asgi_post(gw.app, path, visitor, HUGE, declare=declare)
            assert (refused.status, refused.receive_calls) == (403, 0), path
        assert gw.services.admin.get_action("look_up_order")["tool_name"] == "look_up_order"


@pytest.mark.parametrize("declare", [True, False], ids=["content-length", "chunked"])
async def test_dashboard_posts_stop_reading_at_the_cap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, declare: bool
) -> None:
    async with gateway(tmp_path, monkeypatch) as gw:
        await gw.pre_login("192.0.2.1")
        visitor = {"cookie": gw.cookie("192.0.2.1")}
        csrf = await gw.admin_csrf()
        admin = {"cookie": gw.cookie()}
        for path, headers in [("/login", visitor), *((p, admin) for p in FORM_POSTS)]:
            result = await asgi_post(gw.app, path, headers, HUGE, declare=declare)
            assert result.status == 413, (path, result.body)
            assert result.body == f"Form too large: the limit is {MAX_FORM_BYTES} bytes.".encode()
            if declare:
                assert result.receive_calls == 0, path  # refused on the declared length
            else:
                assert result.bytes_read <= MAX_FORM_BYTES + CHUNK, path
        chat_headers = {**admin, "x-csrf-token": csrf}
        chat = await asgi_post(gw.app, "/playground/chat", chat_headers, HUGE, declare=declare)
        assert chat.status == 413 and str(MAX_REQUEST_BYTES).encode() in chat.body
        assert chat.bytes_read <= MAX_REQUEST_BYTES + CHUNK
        assert gw.upstream.requests == [] and gw.api.received == []
        assert gw.services.admin.get_action("look_up_order")["tool_name"] == "look_up_order"


def _cookies(url: str) -> tuple[str, str]:
    """A visitor's login-page session cookie and a logged-in admin's, from a real serve."""
    with httpx.Client(base_url=url, trust_env=False, timeout=20) as visitor:
        visitor.get("/login")
        pre = f"{COOKIE}={visitor.cookies[COOKIE]}"
    with httpx.Client(base_url=url, trust_env=False, timeout=20) as browser:
        page = browser.get("/login")
        match = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert match, page.text
        done = browser.post("/login", data={"csrf": match.group(1), "token": TOKEN})
        assert done.status_code == 303, done.text
        return pre, f"{COOKIE}={browser.cookies[COOKIE]}"


def test_oversized_dashboard_posts_do_not_grow_a_real_serve(tmp_path: Path) -> None:
    config = {
        "upstream": {"base_url": "http://127.0.0.1:9/v1", "api_key": "up-unused"},
        "agents": [{"id": "support"}],
        "actions": [{"name": "Look up order", "url": "https://api.example.com/orders/1"}],
    }
    process = start_gateway(tmp_path, config, {"ACTIONGATE_ADMIN_TOKEN": TOKEN})
    try:
        pre, admin = _cookies(process.url)
        cases = [
            (path, cookie, expected, chunked)
            for path, cookie, expected in (
                ("/login", None, 403),
                ("/login", pre, 413),
                ("/actions/new", None, 403),
                ("/actions/new", admin, 413),
                ("/secrets", admin, 413),
            )
            for chunked in (False, True)
        ]
        for path, cookie, expected, chunked in cases:  # warm every path up, a little over the cap
            headers = {"Cookie": cookie} if cookie else {}
            small = MAX_FORM_BYTES + (1 << 20)
            assert (
                post_huge(process.port, path, headers, small, chunked=chunked, content_type=FORM)
                == expected
            )
        before = peak_rss_kib(process.process.pid)
        for path, cookie, expected, chunked in cases:
            headers = {"Cookie": cookie} if cookie else {}
            status = post_huge(
                process.port, path, headers, HUGE, chunked=chunked, content_type=FORM
            )
            assert status == expected, (path, cookie, chunked)
        grown_mib = (peak_rss_kib(process.process.pid) - before) / 1024
        process.health()  # still serving
    finally:
        assert process.stop() == 0, process.logs_text()
    assert grown_mib < 32, f"peak RSS grew by {grown_mib:.0f} MiB"


# --- 3. wrong admin tokens back off per client address -----------------------------------------


async def _api(gw: GW, address: str, token: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"}
    return await gw.client(address).get("/api/actions", headers=headers)


async def test_wrong_admin_tokens_back_off_per_address_on_the_api(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with gateway(tmp_path, monkeypatch) as gw:
        answers = [(await _api(gw, ATTACKER, f"guess-{n}")).status_code for n in range(300)]
        assert answers == [401] * 5 + [429] * 295
        refused = await _api(gw, ATTACKER, "guess-300")
        assert refused.headers["retry-after"] == "1"
        assert refused.json()["error"] == {
            "message": "too many wrong admin tokens from this address; retry in 1 s",
            "type": "rate_limit_error",
            "code": "too_many_attempts",
            "param": None,
        }
        # While refused, the token is not even checked: the right one learns nothing either.
        assert (await _api(gw, ATTACKER, TOKEN)).status_code == 429
        # The admin at another address is never slowed down.
        assert (await _api(gw, ADMIN_ADDRESS, TOKEN)).status_code == 200
        # After the window one more guess is checked; a wrong one doubles the window.
        gw.clock.now += 1.0
        assert (await _api(gw, ATTACKER, "guess-301")).status_code == 401
        again = await _api(gw, ATTACKER, "guess-302")
        assert (again.status_code, again.headers["retry-after"]) == (429, "2")
        # The right token from the throttled address after the window works, and resets it.
        gw.clock.now += 2.0
        assert (await _api(gw, ATTACKER, TOKEN)).status_code == 200
        after = [(await _api(gw, ATTACKER, f"late-{n}")).status_code for n in range(6)]
        assert after == [401] * 5 + [429]
        # No token at all is not a guess: it is a 401 that does not count.
        assert (await gw.client("192.0.2.9").get("/api/actions")).status_code == 401
        assert gw.app.state.admin_backoff.retry_after("192.0.2.9") == 0


async def test_login_backs_off_sharing_the_count_with_the_api(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with gateway(tmp_path, monkeypatch) as gw:
        for n in range(3):
            assert (await _api(gw, ATTACKER, f"guess-{n}")).status_code == 401
        for n in range(2):
            wrong = await gw.login(ATTACKER, f"login-guess-{n}")
            assert wrong.status_code == 401 and "Wrong admin token." in wrong.text
        csrf = await gw.pre_login(ATTACKER)
        attacker = gw.client(ATTACKER)
        throttled = await attacker.post("/login", data={"csrf": csrf, "token": TOKEN})
        assert throttled.status_code == 429
        assert throttled.headers["retry-after"] == "1"
        assert throttled.headers["content-type"].startswith("text/html")
        assert "Too many wrong admin tokens from this address: try again in 1 s." in throttled.text
        assert COOKIE in attacker.cookies  # still the visitor's session, not an admin's
        assert (await attacker.get("/actions")).status_code == 303
        # Refused before its body is read (asgi_post posts from 127.0.0.1).
        for n in range(5):
            assert (await _api(gw, "127.0.0.1", f"local-guess-{n}")).status_code == 401
        cookie = {"cookie": gw.cookie(ATTACKER)}
        unread = await asgi_post(gw.app, "/login", cookie, HUGE, declare=False)
        assert (unread.status, unread.receive_calls) == (429, 0)
        # The admin at another address logs in at once.
        assert (await gw.login(ADMIN_ADDRESS)).status_code == 303
        assert (await gw.client(ADMIN_ADDRESS).get("/actions")).status_code == 200
        gw.clock.now += 1.0
        done = await attacker.post("/login", data={"csrf": csrf, "token": TOKEN})
        assert (done.status_code, done.headers["location"]) == (303, "/overview")


def test_backoff_grows_to_its_cap_and_its_memory_is_bounded() -> None:
    clock = Clock()
    backoff = Backoff(clock=clock)
    windows = [backoff.failed("a") for _ in range(16)]
    assert windows == [0, 0, 0, 0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]
    assert backoff.retry_after("a") == 300 and backoff.retry_after("b") == 0
    backoff.succeeded("a")
    assert backoff.retry_after("a") == 0 and len(backoff) == 0
    # An address quiet for an hour starts afresh.
    for _ in range(5):
        backoff.failed("c")
    clock.now += backoff_module.FORGET_AFTER_S + 1
    assert backoff.retry_after("c") == 0 and backoff.failed("c") == 0
    # However many addresses fail, at most max_addresses are remembered.
    small = Backoff(clock=clock, max_addresses=100)
    for n in range(5000):
        small.failed(f"10.0.{n // 256}.{n % 256}")
    assert len(small) == 100


@pytest.mark.parametrize(
    ("host", "key"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
    ],
)
def test_addresses_are_counted_per_ipv4_address_and_per_ipv6_64(host: str, key: str) -> None:
    request = Request({"type": "http", "client": (host, 1), "headers": []})
    assert client_address(request) == key


# --- 20. bidi controls are shown as escapes ---------------------------------------------------

BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"


async def test_bidi_controls_in_customer_and_api_text_are_shown_as_escapes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    note = "refund of invoice\u202efdp.exe"
    conversation = "conv-\u2067evil\u2069"
    async with gateway(tmp_path, monkeypatch) as gw:
        gw.upstream.script([tool_call("add_note", {}, "call_n"), {"content": "Noted."}])
        chat = await gw.client().post(
            "/v1/chat/completions",
            json={
                "model": "support",
                "messages": [{"role": "user", "content": "note it"}],
                "conversation": {"id": conversation, "lead": {"note": note}},
            },
        )
        assert chat.status_code == 200, chat.text
        assert orjson.loads(gw.api.last().body) == {"note": note}  # sent as the customer wrote it
        await gw.admin_csrf()
        page = await gw.client().get("/logs")
        assert page.status_code == 200
        assert not set(BIDI) & set(page.text), "a bidi control reached the page"
        assert "conv-\\u2067evil\\u2069" in page.text
        # The record's page shows the API's echo of the note, in full.
        store = gw.services.runtime.logstore
        (record,), _ = await store.query(conversation_id=conversation)
        detail = await gw.client().get(f"/logs/{record.id}")
        assert detail.status_code == 200
        assert not set(BIDI) & set(detail.text), "a bidi control reached the record's page"
        assert "refund of invoice\\u202efdp.exe" in detail.text
        filtered = await gw.client().get("/logs", params={"conversation_id": conversation})
        assert "conv-\\u2067evil\\u2069" in filtered.text
        assert not set(BIDI) & set(filtered.text)


# --- 21. the Playground on the admin session ---------------------------------------------------


async def _playground(gw: GW, csrf: str | bytes | None, body: Any) -> httpx.Response:
    headers: dict[str, str | bytes] = {}
    if csrf is not None:
        headers["X-CSRF-Token"] = csrf
    return await gw.client().post("/playground/chat", json=body, headers=headers)


async def test_playground_chats_with_a_keyed_agent_on_the_admin_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with gateway(tmp_path, monkeypatch) as gw:
        csrf = await gw.admin_csrf()
        page = await gw.client().get("/playground", params={"agent": "locked"})
        assert page.status_code == 200 and 'data-agent="locked"' in page.text
        assert "Client key" not in page.text and CLIENT_KEY not in page.text
        gw.upstream.script([tool_call("lead_echo", {}, "call_l"), {"content": "Here you go."}])
        conversation = {
            "id": "pg-1",
            "lead": {"email": "jane@example.com", "name": "Jane", "plan": "pro"},
            "user_id": "u-7",
            "channel": "web",
        }
        messages = [{"role": "user", "content": "who am I?"}]
        body = {"agent": "locked", "messages": messages, "conversation": conversation}
        answer = await _playground(gw, csrf, body)
        assert answer.status_code == 200, answer.text
        data = answer.json()
        assert data["choices"][0]["message"]["content"] == "Here you go."
        assert data["actiongate"]["conversation_id"] == "pg-1"
        assert parse_qs(gw.api.last().query_string) == {
            "email": ["jane@example.com"],
            "name": ["Jane"],
            "plan": ["pro"],
            "user": ["u-7"],
            "channel": ["web"],
        }
        # During the chat: changed variables go with the next message.
        conversation["lead"] = {"email": "sam@example.com", "name": "Sam", "plan": "team"}
        conversation["channel"] = "email"
        gw.upstream.script([tool_call("lead_echo", {}, "call_m"), {"content": "Updated."}])
        messages += [data["choices"][0]["message"], {"role": "user", "content": "and now?"}]
        again = await _playground(gw, csrf, body)
        assert again.status_code == 200, again.text
        assert parse_qs(gw.api.last().query_string) == {
            "email": ["sam@example.com"],
            "name": ["Sam"],
            "plan": ["team"],
            "user": ["u-7"],
            "channel": ["email"],
        }
        # The proxy itself still wants the agent's client key, session cookie or not.
        front = await gw.client().post(
            "/v1/chat/completions", json={"model": "locked", "messages": messages}
        )
        assert front.status_code == 401


async def test_playground_chat_needs_the_session_and_its_csrf_header(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = {"agent": "locked", "messages": [{"role": "user", "content": "hi"}]}
    async with gateway(tmp_path, monkeypatch) as gw:
        anonymous = await _playground(gw, None, body)
        assert (anonymous.status_code, anonymous.json()["error"]["code"]) == (401, "unauthorized")
        csrf = await gw.admin_csrf()
        near = csrf[:-1] + ("x" if csrf[-1] != "x" else "y")
        for presented in (None, "", "forged", near, ("é" * len(csrf)).encode()):
            refused = await _playground(gw, presented, body)
            assert refused.status_code == 403, presented
            assert refused.json()["error"]["code"] == "csrf_failed"
        form = await gw.client().post(
            "/playground/chat", data={"agent": "locked"}, headers={"X-CSRF-Token": csrf}
        )
        assert form.status_code == 415
        for extra, value in (("stream", True), ("tools", []), ("upstream", {"base_url": "x"})):
            refused = await _playground(gw, csrf, {**body, extra: value})
            assert refused.status_code == 400 and refused.json()["error"]["param"] == extra
        unknown = await _playground(gw, csrf, {**body, "agent": "nope"})
        assert unknown.status_code == 404
        bad_lead = await _playground(gw, csrf, {**body, "conversation": {"lead": {"age": 42}}})
        assert bad_lead.json()["error"]["param"] == "conversation.lead.age"
        assert gw.upstream.requests == []


# --- 22. constant-time CSRF, itsdangerous cookies, HKDF keys -----------------------------------


def _serializer(secret: bytes, signer: type[TimestampSigner] = TimestampSigner) -> Any:
    key = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=b"actiongate dashboard",
        info=b"actiongate/dashboard/session-cookie/v2",
    ).derive(secret)
    return URLSafeTimedSerializer(
        key,
        salt="actiongate.dashboard.session",
        signer=signer,
        signer_kwargs={"key_derivation": "none", "digest_method": hashlib.sha256},
    )


class _LongAgo(TimestampSigner):
    def get_timestamp(self) -> int:
        return int(time.time()) - MAX_AGE_S - 60


async def _page_status(gw: GW, cookie: str) -> int:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=gw.app), base_url="http://gw"
    ) as browser:
        browser.cookies.set(COOKIE, cookie)
        return (await browser.get("/actions")).status_code


async def test_session_cookie_is_signed_by_itsdangerous_with_an_hkdf_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with gateway(tmp_path, monkeypatch) as gw:
        csrf = await gw.admin_csrf()
        cookie = gw.client().cookies[COOKIE]
        secret = gw.services.token.derive_key(b"dashboard")
        assert _serializer(secret).loads(cookie, max_age=MAX_AGE_S) == {
            "csrf": csrf,
            "admin": True,
        }
        assert await _page_status(gw, cookie) == 200
        forged = _serializer(secret).dumps({"csrf": csrf, "admin": True})
        assert await _page_status(gw, forged) == 200  # the test's derivation is the gateway's
        # Refused: the old format, a key that is the bare secret, a tampered or expired cookie.
        payload = orjson.dumps({"csrf": csrf, "admin": True, "exp": time.time() + 3600})
        body = base64.urlsafe_b64encode(payload).decode().rstrip("=")
        digest = hmac.new(secret, body.encode(), hashlib.sha256).digest()
        old = f"{body}.{base64.urlsafe_b64encode(digest).decode().rstrip('=')}"
        bare = URLSafeTimedSerializer(secret, salt="actiongate.dashboard.session")
        tampered = cookie.replace(cookie.split(".")[0], _serializer(secret).dumps({}).split(".")[0])
        for bad in (
            old,
            bare.dumps({"csrf": csrf, "admin": True}),
            _serializer(secret, _LongAgo).dumps({"csrf": csrf, "admin": True}),
            tampered,
            _serializer(b"another token").dumps({"csrf": csrf, "admin": True}),
            _serializer(secret).dumps({"csrf": csrf, "admin": "yes"}),
        ):
            assert await _page_status(gw, bad) == 303, bad  # to the login page


async def test_csrf_tokens_are_compared_in_constant_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    compared: list[tuple[Any, Any]] = []
    real = session_module.hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        compared.append((a, b))
        return real(a, b)

    async with gateway(tmp_path, monkeypatch) as gw:
        csrf = await gw.admin_csrf()
        monkeypatch.setattr(session_module.hmac, "compare_digest", spy)
        for wrong in (csrf[:-1] + ("x" if csrf[-1] != "x" else "y"), "é" * 8, ""):
            refused = await gw.client().post("/secrets", data={"csrf": wrong, "name": "N"})
            assert refused.status_code == 403, wrong
        assert (csrf[:-1] + ("x" if csrf[-1] != "x" else "y")).encode() in [a for a, _ in compared]
        assert ("é" * 8).encode() in [a for a, _ in compared]
        saved = await gw.client().post(
            "/secrets", data={"csrf": csrf, "name": "N", "value": "v-long-enough"}
        )
        assert saved.status_code == 303
        assert (csrf.encode(), csrf.encode()) in compared


# --- 23. unknown dashboard URLs get an HTML page ----------------------------------------------


async def test_unknown_dashboard_urls_get_an_html_page_with_the_sidebar(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with gateway(tmp_path, monkeypatch) as gw:
        visitor = await gw.client("192.0.2.1").get("/no/such/page")
        assert visitor.status_code == 404
        assert visitor.headers["content-type"].startswith("text/html")
        assert 'href="/login"' in visitor.text and 'class="sidebar"' not in visitor.text
        await gw.admin_csrf()
        for path in ("/nope", "/actions/look_up_order/nope/deeper", "/apis", "/v1x"):
            page = await gw.client().get(path)
            assert page.status_code == 404, path
            assert page.headers["content-type"].startswith("text/html"), path
            assert "content-security-policy" in page.headers
            assert '<nav class="sidebar" aria-label="Main">' in page.text, path
            assert "<h1>Page not found</h1>" in page.text
        auth = {"Authorization": f"Bearer {TOKEN}"}
        for path in (
            "/api/nope",
            "/api",
            "/v1/nope",
            "/static/nope.css",
            "/healthz/x",
            "/metrics/x",
        ):
            answer = await gw.client().get(path, headers=auth)
            assert answer.status_code == 404, path
            assert answer.headers["content-type"] == "application/json", path
            assert answer.json()["error"]["message"] == "Not Found", path
