"""OAuth 2.0 refresh-token grant: authorization-code apps (gateway/engine/auth.py).

The unit tests drive :class:`OAuthTokens` with a fake endpoint; the integration tests run two
runtimes ("replicas") on one SQLite file against a real token server that rotates refresh tokens
the way Xero's does (each refresh revokes the token it used and issues a new one).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
import sqlalchemy as sa
from aiohttp import web
from pydantic import ValidationError

from gateway.admin.service import Admin
from gateway.definitions.actions import OAuth2RefreshToken
from gateway.definitions.config import parse_action, parse_config
from gateway.engine.auth import AuthError, OAuthTokens
from gateway.engine.context import Conversation
from gateway.engine.runtime import Runtime, open_runtime
from gateway.engine.workspace import Workspace
from gateway.stores.definitions import DefinitionStore
from gateway.stores.secrets import SecretStore, ensure_admin_token, store_key

FIRST_REFRESH = "rt-first-0123456789"
VALUES: dict[str, Any] = {
    "secrets": {
        "XERO_CLIENT_ID": "client-abc",
        "XERO_CLIENT_SECRET": "client-secret-xyz-123",
        "XERO_REFRESH_TOKEN": FIRST_REFRESH,
    }
}
AUTH = OAuth2RefreshToken(
    token_url="https://identity.example.com/connect/token",
    client_id="{{secrets.XERO_CLIENT_ID}}",
    client_secret="{{secrets.XERO_CLIENT_SECRET}}",
    refresh_token="{{secrets.XERO_REFRESH_TOKEN}}",
)


class Endpoint:
    """A fake token endpoint that rotates: each good refresh revokes the token it used."""

    def __init__(self, *, rotate: bool = True, lifetime: int = 1800) -> None:
        self.valid = {FIRST_REFRESH}
        self.rotate = rotate
        self.lifetime = lifetime
        self.forms: list[dict[str, str]] = []
        self.headers: list[dict[str, str]] = []
        self.hold: asyncio.Event | None = None

    def answer(self, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        self.forms.append(form)
        self.headers.append(headers)
        used = form.get("refresh_token", "")
        if form.get("grant_type") != "refresh_token" or used not in self.valid:
            return 400, {"error": "invalid_grant"}
        n = len(self.forms)
        answer: dict[str, Any] = {
            "access_token": f"at-{n}-abcdefgh",
            "token_type": "Bearer",
            "expires_in": self.lifetime,
        }
        if self.rotate:
            self.valid.discard(used)
            answer["refresh_token"] = f"rt-rotated-{n}-0123456789"
            self.valid.add(answer["refresh_token"])
        return 200, answer

    async def __call__(self, url: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        if self.hold is not None:
            await self.hold.wait()
        status, payload = self.answer(headers, body)
        return status, json.dumps(payload).encode()


class MemoryStore:
    def __init__(self, value: str | None = None) -> None:
        self.value = value
        self.rotations: list[tuple[str, str]] = []

    async def current(self, name: str) -> str | None:
        return self.value

    async def rotate(self, name: str, value: str) -> None:
        self.rotations.append((name, value))
        self.value = value


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- the grant --------------------------------------------------------------------------------


async def test_refresh_grant_follows_rfc_6749_section_6() -> None:
    endpoint = Endpoint(rotate=False)
    token = await OAuthTokens(endpoint).token(AUTH, VALUES)
    assert token == "at-1-abcdefgh"
    assert endpoint.forms == [{"grant_type": "refresh_token", "refresh_token": FIRST_REFRESH}]
    assert endpoint.headers[0]["Authorization"].startswith("Basic ")
    assert endpoint.headers[0]["Content-Type"] == "application/x-www-form-urlencoded"


async def test_a_public_client_sends_its_id_in_the_form_and_no_basic_header() -> None:
    endpoint = Endpoint(rotate=False)
    public = AUTH.model_copy(update={"client_secret": None, "scope": "offline_access accounting"})
    await OAuthTokens(endpoint).token(public, VALUES)
    assert endpoint.forms[0]["client_id"] == "client-abc"
    assert endpoint.forms[0]["scope"] == "offline_access accounting"
    assert "Authorization" not in endpoint.headers[0]


async def test_fifty_concurrent_callers_cause_one_refresh() -> None:
    endpoint = Endpoint()
    endpoint.hold = asyncio.Event()
    oauth = OAuthTokens(endpoint, refresh_store=MemoryStore())
    calls = [asyncio.create_task(oauth.token(AUTH, VALUES)) for _ in range(50)]
    for _ in range(5):
        await asyncio.sleep(0)
    endpoint.hold.set()
    assert await asyncio.gather(*calls) == ["at-1-abcdefgh"] * 50
    assert len(endpoint.forms) == 1


async def test_a_rotated_token_is_stored_and_used_for_the_next_refresh() -> None:
    endpoint, store, clock = Endpoint(lifetime=600), MemoryStore(), Clock()
    oauth = OAuthTokens(endpoint, clock=clock, refresh_store=store)
    sunk: list[str] = []
    assert await oauth.token(AUTH, VALUES, secret_sink=sunk.append) == "at-1-abcdefgh"
    assert store.rotations == [("XERO_REFRESH_TOKEN", "rt-rotated-1-0123456789")]
    assert "rt-rotated-1-0123456789" in sunk  # registered for redaction at once
    clock.now += 600
    assert await oauth.token(AUTH, VALUES) == "at-2-abcdefgh"
    assert endpoint.forms[1]["refresh_token"] == "rt-rotated-1-0123456789"
    assert store.value == "rt-rotated-2-0123456789"


async def test_without_a_store_the_process_keeps_the_rotated_token_and_warns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    endpoint, clock = Endpoint(lifetime=600), Clock()
    oauth = OAuthTokens(endpoint, clock=clock)
    with caplog.at_level(logging.WARNING, "actiongate.auth"):
        await oauth.token(AUTH, VALUES)
    assert "lives in this process only" in caplog.text
    assert "rt-rotated" not in caplog.text
    clock.now += 600
    assert await oauth.token(AUTH, VALUES) == "at-2-abcdefgh"


async def test_a_token_another_replica_rotated_is_read_before_refreshing() -> None:
    endpoint, clock = Endpoint(lifetime=600), Clock()
    store = MemoryStore()
    oauth = OAuthTokens(endpoint, clock=clock, refresh_store=store)
    await oauth.token(AUTH, VALUES)
    # Another replica refreshed meanwhile: its rotation is the only valid token now.
    endpoint.valid = {"rt-by-replica-b-0123456789"}
    store.value = "rt-by-replica-b-0123456789"
    clock.now += 600
    assert await oauth.token(AUTH, VALUES) == "at-2-abcdefgh"
    assert endpoint.forms[1]["refresh_token"] == "rt-by-replica-b-0123456789"


async def test_invalid_grant_retries_once_with_a_token_rotated_during_the_request() -> None:
    endpoint = Endpoint()
    endpoint.valid = {"rt-newer-0123456789"}

    class RacingStore(MemoryStore):
        reads = 0

        async def current(self, name: str) -> str | None:
            self.reads += 1  # the first read is before the other replica's rotation
            return None if self.reads == 1 else "rt-newer-0123456789"

    store = RacingStore()
    assert await OAuthTokens(endpoint, refresh_store=store).token(AUTH, VALUES)
    assert [f["refresh_token"] for f in endpoint.forms] == [FIRST_REFRESH, "rt-newer-0123456789"]


async def test_a_revoked_refresh_token_fails_once_with_the_oauth_code() -> None:
    endpoint = Endpoint()
    endpoint.valid = set()
    with pytest.raises(AuthError) as caught:
        await OAuthTokens(endpoint, refresh_store=MemoryStore()).token(AUTH, VALUES)
    assert caught.value.reason == "HTTP 400 (invalid_grant)"
    assert caught.value.outcome == "connect_error"
    assert len(endpoint.forms) == 1  # nothing newer in the store: no second try
    assert FIRST_REFRESH not in str(caught.value)


def test_refresh_token_must_name_one_secret() -> None:
    for bad in ("rt-literal-token", "{{secrets.A}}{{secrets.B}}", "Bearer {{secrets.A}}"):
        with pytest.raises(ValidationError, match=r"exactly \{\{secrets.NAME\}\}"):
            OAuth2RefreshToken(token_url="https://x/t", client_id="c", refresh_token=bad)


# --- two replicas, one database, a real token server -------------------------------------------


@asynccontextmanager
async def servers(endpoint: Endpoint) -> AsyncIterator[tuple[str, list[str]]]:
    """A token endpoint and an API that wants a current access token; yields (base, auth seen)."""
    seen: list[str] = []

    async def token(request: web.Request) -> web.Response:
        status, payload = endpoint.answer(dict(request.headers), await request.read())
        return web.json_response(payload, status=status)

    async def invoices(request: web.Request) -> web.Response:
        # Only the newest access token is good: a replica's cached one is refused after another
        # replica refreshed, so the next call must refresh (after a 401) with the newest token.
        given = request.headers.get("Authorization", "")
        seen.append(given)
        if given != f"Bearer at-{len(endpoint.forms)}-abcdefgh":
            return web.json_response({"error": "invalid_token"}, status=401)
        return web.json_response({"invoices": [{"id": "INV-1"}]})

    app = web.Application()
    app.router.add_post("/connect/token", token)
    app.router.add_get("/api.xro/2.0/Invoices", invoices)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        await runner.cleanup()


def replica_config(base: str, db: Path) -> Any:
    return parse_config(
        {
            "upstream": {"base_url": "http://127.0.0.1:9", "api_key": "k-upstream", "model": "m"},
            "database": f"sqlite:///{db}",
            "egress": {"allow": ["127.0.0.1"]},
            "secrets": {"XERO_CLIENT_ID": "client-abc", "XERO_CLIENT_SECRET": "client-secret-xyz"},
            "agents": [{"id": "support"}],
            "actions": [],
        },
        environ={},
    )


def invoices_action(base: str) -> Any:
    return parse_action(
        {
            "type": "http",
            "name": "List invoices",
            "description": "List the customer's invoices.",
            "method": "GET",
            "url": f"{base}/api.xro/2.0/Invoices",
            "auth": {
                "type": "oauth2_refresh_token",
                "token_url": f"{base}/connect/token",
                "client_id": "{{secrets.XERO_CLIENT_ID}}",
                "client_secret": "{{secrets.XERO_CLIENT_SECRET}}",
                "refresh_token": "{{secrets.XERO_REFRESH_TOKEN}}",
            },
        },
        0,
    )


@asynccontextmanager
async def replica(base: str, db: Path) -> AsyncIterator[tuple[Runtime, SecretStore]]:
    config = replica_config(base, db)
    runtime = await open_runtime(config)
    try:
        token = await ensure_admin_token(runtime.engine)
        store = SecretStore(runtime.engine, store_key(token.derive_key))
        Admin(config, Workspace(config), DefinitionStore(runtime.engine), runtime, store)
        yield runtime, store
    finally:
        await runtime.close()


async def call(runtime: Runtime, base: str) -> Any:
    conversation = Conversation(id="c1", agent_id="support")
    return await runtime.executor.execute_action(invoices_action(base), conversation, {})


async def test_replicas_share_rotations_through_the_encrypted_secret_store(
    tmp_path: Path,
) -> None:
    endpoint = Endpoint()
    db = tmp_path / "gw.db"
    async with (
        servers(endpoint) as (base, seen),
        replica(base, db) as (one, secrets),
        replica(base, db) as (two, _),
    ):
        await secrets.put("XERO_REFRESH_TOKEN", FIRST_REFRESH)
        for runtime in (one, two, one, two):
            runtime.executor.secrets["XERO_REFRESH_TOKEN"] = FIRST_REFRESH  # as loaded at start
            result = await call(runtime, base)
            assert result.outcome == "success", result.record.error
        # Each replica used the token the other had rotated: four refreshes, none refused.
        assert [f["refresh_token"] for f in endpoint.forms] == [
            FIRST_REFRESH,
            *(f"rt-rotated-{n}-0123456789" for n in (1, 2, 3)),
        ]
        assert seen == [f"Bearer at-{n}-abcdefgh" for n in (1, 2, 1, 3, 2, 4)]  # 401, retry
        assert await secrets.get("XERO_REFRESH_TOKEN") == "rt-rotated-4-0123456789"
        async with one.engine.connect() as conn:
            raw = (await conn.execute(sa.text("SELECT value FROM secrets"))).scalars().all()
        assert not any("rt-rotated" in value for value in raw)  # sealed, not plain text
        await one.logstore.flush()
        records, _ = await one.logstore.query()
        logged = json.dumps([r.to_dict() for r in records], default=str)
        assert "rt-rotated" not in logged and "at-1-abcdefgh" not in logged
        assert FIRST_REFRESH not in logged
