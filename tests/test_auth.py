"""Credentials on rendered requests and the OAuth token cache (gateway/engine/auth.py)."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest

from gateway.definitions.actions import (
    ApiKeyAuth,
    BasicAuth,
    BearerAuth,
    HeadersAuth,
    NoAuth,
    OAuth2ClientCredentials,
)
from gateway.engine.auth import AuthError, OAuthTokens, apply_auth, bearer_token
from gateway.engine.rendering import RenderedRequest
from gateway.errors import ExecutionRefused, HeaderValueError, MissingVariableError

CLIENT_SECRET = "s3cr/t+=&é"
VALUES: dict[str, Any] = {
    "secrets": {
        "TOKEN": "tok-123456",
        "KEY": "a/b+c&d=e f",
        "CLIENT_ID": "my client:1",
        "CLIENT_SECRET": CLIENT_SECRET,
        "TENANT": "acme",
    },
    "lead": {"email": "a@b.c"},
}
OAUTH = OAuth2ClientCredentials(
    token_url="https://auth.example.com/{{secrets.TENANT}}/oauth2/token",
    client_id="{{secrets.CLIENT_ID}}",
    client_secret="{{secrets.CLIENT_SECRET}}",
    scope="read write",
)


def api_key(name: str, where: str, value: str) -> ApiKeyAuth:
    return ApiKeyAuth.model_validate({"name": name, "in": where, "value": value})


def request(url: str = "https://api.example.com/customers") -> RenderedRequest:
    return RenderedRequest("GET", url, {"Accept": "application/json"})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class TokenServer:
    """A fake token endpoint: answers from a queue (the last answer repeats) and logs requests."""

    def __init__(self, *answers: tuple[int, Any]) -> None:
        self.answers = list(answers) or [(200, {"access_token": "T1", "token_type": "Bearer"})]
        self.calls: list[tuple[str, dict[str, str], bytes]] = []
        self.hold: asyncio.Event | None = None

    async def __call__(self, url: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        self.calls.append((url, headers, body))
        if self.hold is not None:
            await self.hold.wait()
        status, payload = self.answers[min(len(self.calls), len(self.answers)) - 1]
        raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        return status, raw


def issued(*tokens: str, expires_in: int | None = None) -> list[tuple[int, Any]]:
    extra = {} if expires_in is None else {"expires_in": expires_in}
    return [(200, {"access_token": t, "token_type": "bearer", **extra}) for t in tokens]


async def apply(auth: Any, req: RenderedRequest, oauth: OAuthTokens | None = None) -> list[str]:
    sunk: list[str] = []
    await apply_auth(
        auth, req, VALUES, oauth=oauth or OAuthTokens(TokenServer()), secret_sink=sunk.append
    )
    return sunk


# --- static credentials --------------------------------------------------------------------


async def test_none_and_missing_auth_leave_the_request_alone() -> None:
    for auth in (None, NoAuth()):
        req = request()
        assert await apply(auth, req) == []
        assert req == request()


async def test_bearer_replaces_a_literal_authorization_header() -> None:
    req = request()
    req.headers["authorization"] = "Bearer YOUR_API_KEY"
    sunk = await apply(BearerAuth(token="{{secrets.TOKEN}}"), req)
    assert req.headers == {"Accept": "application/json", "Authorization": "Bearer tok-123456"}
    assert sunk == ["tok-123456"]


async def test_api_key_in_a_header() -> None:
    req = request()
    sunk = await apply(api_key("X-Api-Key", "header", "{{secrets.KEY}}"), req)
    assert req.headers["X-Api-Key"] == "a/b+c&d=e f"
    assert req.url == "https://api.example.com/customers"
    assert sunk == ["a/b+c&d=e f"]


async def test_api_key_in_the_query_is_appended_and_percent_encoded() -> None:
    req = request("https://api.example.com/customers?email=a%40b.c")
    sunk = await apply(api_key("api key", "query", "{{secrets.KEY}}"), req)
    assert req.url == (
        "https://api.example.com/customers?email=a%40b.c&api%20key=a%2Fb%2Bc%26d%3De%20f"
    )
    assert req.query == [("api key", "a/b+c&d=e f")]
    assert "X-Api-Key" not in req.headers
    assert sunk == ["a/b+c&d=e f"]


async def test_api_key_in_the_query_starts_a_query_when_there_is_none() -> None:
    req = request()
    await apply(api_key("key", "query", "k-{{secrets.TOKEN}}"), req)
    assert req.url == "https://api.example.com/customers?key=k-tok-123456"


async def test_basic_is_base64_of_utf8_user_colon_password() -> None:
    # RFC 7617 §2.1's own example: "test" / "123£" with charset UTF-8.
    values = {"secrets": {"USER": "test", "PASS": "123£"}}
    req = request()
    sunk: list[str] = []
    auth = BasicAuth(username="{{secrets.USER}}", password="{{secrets.PASS}}")
    await apply_auth(auth, req, values, oauth=OAuthTokens(TokenServer()), secret_sink=sunk.append)
    assert req.headers["Authorization"] == "Basic dGVzdDoxMjPCow=="
    assert "dGVzdDoxMjPCow==" in sunk  # the derived form, so logs never show it
    assert {"test", "123£", "test:123£"} <= set(sunk)


async def test_basic_with_a_literal_username_does_not_mask_it_everywhere() -> None:
    req = request()
    sunk = await apply(BasicAuth(username="api", password="{{secrets.TOKEN}}"), req)
    assert req.headers["Authorization"] == "Basic " + base64.b64encode(b"api:tok-123456").decode()
    assert "api" not in sunk
    assert "tok-123456" in sunk


async def test_basic_refuses_a_colon_in_the_username() -> None:
    auth = BasicAuth(username="{{secrets.CLIENT_ID}}", password="{{secrets.TOKEN}}")
    with pytest.raises(ExecutionRefused, match="may not contain ':'"):
        await apply(auth, request())


async def test_plain_headers_are_rendered() -> None:
    req = request()
    auth = HeadersAuth(headers={"X-Token": "{{secrets.TOKEN}}", "X-Tenant": "t-{{secrets.TENANT}}"})
    sunk = await apply(auth, req)
    assert req.headers["X-Token"] == "tok-123456"
    assert req.headers["X-Tenant"] == "t-acme"
    assert sunk == ["tok-123456", "t-acme"]


@pytest.mark.parametrize(
    ("auth", "header"),
    [
        (BearerAuth(token="{{secrets.EVIL}}"), "Authorization"),
        (api_key("X-Api-Key", "header", "{{secrets.EVIL}}"), "X-Api-Key"),
        (HeadersAuth(headers={"X-Token": "{{secrets.EVIL}}"}), "X-Token"),
    ],
)
@pytest.mark.parametrize("evil", ["abcd\r\nX-Injected: 1", "abcd\nx", "abcd\x00"])
async def test_line_breaks_in_a_secret_are_refused(auth: Any, header: str, evil: str) -> None:
    req = request()
    with pytest.raises(HeaderValueError) as info:
        await apply_auth(
            auth,
            req,
            {"secrets": {"EVIL": evil}},
            oauth=OAuthTokens(TokenServer()),
            secret_sink=lambda _: None,
        )
    assert info.value.header == header
    assert "abcd" not in str(info.value)
    assert req == request()


@pytest.mark.parametrize(
    "auth",
    [
        BearerAuth(token="{{secrets.X}}"),
        api_key("X-Api-Key", "header", "{{secrets.X}}"),
        api_key("key", "query", "{{secrets.X}}"),
        BasicAuth(username="user", password="{{secrets.X}}"),
        HeadersAuth(headers={"X-Token": "{{secrets.TOKEN}}", "X-Other": "{{secrets.X}}"}),
        OAuth2ClientCredentials(
            token_url="https://auth.example.com/token",
            client_id="id",
            client_secret="{{secrets.X}}",
        ),
    ],
)
@pytest.mark.parametrize("secrets", [{}, {"X": ""}, {"X": "   "}])
async def test_missing_secret_names_it_and_sends_nothing(
    auth: Any, secrets: dict[str, str]
) -> None:
    server = TokenServer()
    req = request()
    with pytest.raises(MissingVariableError) as info:
        await apply_auth(
            auth,
            req,
            {"secrets": {"TOKEN": "tok-123456", **secrets}},
            oauth=OAuthTokens(server),
            secret_sink=lambda _: None,
        )
    assert info.value.variable == "secrets.X"
    assert "secrets.X" in str(info.value)
    assert req == request()
    assert server.calls == []


# --- OAuth 2.0 client credentials ----------------------------------------------------------


async def test_token_request_follows_rfc_6749_with_client_secret_basic() -> None:
    server = TokenServer(*issued("T1"))
    oauth = OAuthTokens(server)
    req = request()
    sunk = await apply(OAUTH, req, oauth)

    assert req.headers["Authorization"] == "Bearer T1"
    [(url, headers, body)] = server.calls
    assert url == "https://auth.example.com/acme/oauth2/token"
    assert headers["Content-Type"] == "application/x-www-form-urlencoded"
    # §2.3.1: id and secret are form-urlencoded *before* the Basic base64.
    encoded = "my+client%3A1:s3cr%2Ft%2B%3D%26%C3%A9"
    basic = base64.b64encode(encoded.encode()).decode()
    assert headers["Authorization"] == f"Basic {basic}"
    assert body == b"grant_type=client_credentials&scope=read+write"
    assert {CLIENT_SECRET, basic, "T1"} <= set(sunk)


async def test_client_secret_post_puts_credentials_in_the_body() -> None:
    server = TokenServer(*issued("T1"))
    auth = OAUTH.model_copy(update={"scope": None})
    await OAuthTokens(server, client_auth="client_secret_post").token(auth, VALUES)
    [(_, headers, body)] = server.calls
    assert "Authorization" not in headers
    assert body == (
        b"grant_type=client_credentials&client_id=my+client%3A1"
        b"&client_secret=s3cr%2Ft%2B%3D%26%C3%A9"
    )


async def test_token_is_cached_then_refreshed_30s_before_expiry() -> None:
    clock = Clock()
    server = TokenServer(*issued("T1", "T2", expires_in=3600))
    oauth = OAuthTokens(server, clock=clock)
    assert await oauth.token(OAUTH, VALUES) == "T1"
    clock.now += 3569
    assert await oauth.token(OAUTH, VALUES) == "T1"
    assert len(server.calls) == 1
    clock.now += 1
    assert await oauth.token(OAUTH, VALUES) == "T2"
    assert len(server.calls) == 2


async def test_token_without_expires_in_lives_300s() -> None:
    clock = Clock()
    server = TokenServer(*issued("T1", "T2"))
    oauth = OAuthTokens(server, clock=clock)
    await oauth.token(OAUTH, VALUES)
    clock.now += 269
    assert await oauth.token(OAUTH, VALUES) == "T1"
    clock.now += 1
    assert await oauth.token(OAUTH, VALUES) == "T2"


async def test_tokens_are_cached_per_scope() -> None:
    server = TokenServer(*issued("T1", "T2"))
    oauth = OAuthTokens(server)
    other = OAUTH.model_copy(update={"scope": "admin"})
    assert [await oauth.token(a, VALUES) for a in (OAUTH, other, OAUTH, other)] == [
        "T1",
        "T2",
        "T1",
        "T2",
    ]


async def test_fifty_concurrent_callers_cause_one_token_request() -> None:
    server = TokenServer(*issued("T1", "T2"))
    server.hold = asyncio.Event()
    arrived = 0

    def sink(value: str) -> None:
        # Every caller hands over the client secret before queueing for the refresh lock.
        nonlocal arrived
        if value == CLIENT_SECRET:
            arrived += 1
            if arrived == 50:
                server.hold.set()  # type: ignore[union-attr]

    oauth = OAuthTokens(server)
    tokens = await asyncio.gather(
        *(oauth.token(OAUTH, VALUES, secret_sink=sink) for _ in range(50))
    )
    assert tokens == ["T1"] * 50
    assert len(server.calls) == 1


async def test_ten_concurrent_401s_cause_one_refresh() -> None:
    server = TokenServer(*issued("T1", "T2", "T3"))
    oauth = OAuthTokens(server)
    assert await oauth.token(OAUTH, VALUES) == "T1"
    server.hold = asyncio.Event()
    invalidated = 0

    async def after_401() -> str:
        nonlocal invalidated
        await oauth.invalidate(OAUTH, VALUES, "T1")
        invalidated += 1
        if invalidated == 10:
            server.hold.set()  # type: ignore[union-attr]
        return await oauth.token(OAUTH, VALUES)

    assert await asyncio.gather(*(after_401() for _ in range(10))) == ["T2"] * 10
    assert len(server.calls) == 2


async def test_invalidating_a_stale_token_keeps_the_new_one() -> None:
    server = TokenServer(*issued("T1", "T2", "T3"))
    oauth = OAuthTokens(server)
    await oauth.token(OAUTH, VALUES)
    await oauth.invalidate(OAUTH, VALUES, "T1")
    assert await oauth.token(OAUTH, VALUES) == "T2"
    await oauth.invalidate(OAUTH, VALUES, "T1")  # a late 401 from a request that carried T1
    await oauth.invalidate(OAUTH, VALUES, "never-issued")
    assert await oauth.token(OAUTH, VALUES) == "T2"
    assert len(server.calls) == 2


async def test_bearer_token_reads_back_what_was_sent() -> None:
    req = request()
    await apply(OAUTH, req, OAuthTokens(TokenServer(*issued("T1"))))
    assert bearer_token(req) == "T1"
    assert bearer_token(request()) is None


@pytest.mark.parametrize(
    ("status", "payload", "reason"),
    [
        (401, {"error": "invalid_client", "error_description": f"bad {CLIENT_SECRET}"}, "401"),
        (400, {"error": f"oops {CLIENT_SECRET}"}, "HTTP 400"),
        (500, f"<html>{CLIENT_SECRET} trace</html>".encode(), "HTTP 500"),
        (200, f"<html>{CLIENT_SECRET}</html>".encode(), "not a JSON object"),
        (200, [CLIENT_SECRET], "not a JSON object"),
        (200, {"token_type": "bearer", "echo": CLIENT_SECRET}, "no valid access_token"),
        (200, {"access_token": "abc\r\nX-Evil: 1", "token_type": "bearer"}, "no valid"),
        (200, {"access_token": "abc", "token_type": "mac", "echo": CLIENT_SECRET}, "not a bearer"),
    ],
)
async def test_bad_token_answers_raise_auth_error_without_secrets(
    status: int, payload: Any, reason: str
) -> None:
    req = request()
    with pytest.raises(AuthError) as info:
        await apply(OAUTH, req, OAuthTokens(TokenServer((status, payload))))
    message = str(info.value)
    assert "auth.example.com" in message
    assert reason in message
    assert info.value.status == status
    for leak in (CLIENT_SECRET, "s3cr", "html", "oops", "abc", "bad "):
        assert leak not in message
    assert "Authorization" not in req.headers


async def test_oauth_error_code_is_reported() -> None:
    server = TokenServer((401, {"error": "invalid_client"}))
    with pytest.raises(AuthError, match=r"HTTP 401 \(invalid_client\)"):
        await OAuthTokens(server).token(OAUTH, VALUES)


async def test_token_type_is_case_insensitive_and_may_be_omitted() -> None:
    for token_type in ({"token_type": "BEARER"}, {}):
        server = TokenServer((200, {"access_token": "T1", **token_type}))
        assert await OAuthTokens(server).token(OAUTH, VALUES) == "T1"


async def test_callers_waiting_on_a_failed_refresh_share_its_error() -> None:
    server = TokenServer((503, b""), *issued("T1"))
    server.hold = asyncio.Event()
    arrived = 0

    def sink(value: str) -> None:
        nonlocal arrived
        if value == CLIENT_SECRET:
            arrived += 1
            if arrived == 5:
                server.hold.set()  # type: ignore[union-attr]

    oauth = OAuthTokens(server)
    results = await asyncio.gather(
        *(oauth.token(OAUTH, VALUES, secret_sink=sink) for _ in range(5)), return_exceptions=True
    )
    assert all(isinstance(r, AuthError) and r.status == 503 for r in results)
    assert len(server.calls) == 1
    assert await oauth.token(OAUTH, VALUES) == "T1"  # the next caller tries again
