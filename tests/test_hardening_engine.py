"""Issue 12, items 9, 13, 14, 18 and 19: the execution engine against a hostile local API.

Each test sends the hostile input through the real executor, outbound client and log store and
checks the outcome, what the API received, what the model got and the database's bytes.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import tracemalloc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import web

from gateway.definitions.actions import HttpAction, OAuth2ClientCredentials
from gateway.definitions.config import parse_action
from gateway.engine.auth import AuthError, OAuthTokens
from gateway.engine.context import Conversation
from gateway.engine.executor import STORED_BODY_CAP, Execution, Executor
from gateway.errors import EgressBlocked
from gateway.net.egress import EgressPolicy
from gateway.net.outbound import MAX_CONTENT_CODINGS, ConnectFailed, Outbound
from gateway.redaction import CREDENTIAL_PARAMS, REDACTED, Redactor
from gateway.stores.db import migrate
from gateway.stores.engines import create_engine
from gateway.stores.logs import LogStore
from tests.support.action_api import GZIP_BOMB

SECRETS = {
    "API_TOKEN": "tok-SECRET-7f3a9c",
    "MIXED": "MiXeD-SeCrEt-42ab",
    "PADDED": "  padded-SECRET-x1  ",
    "CS": "cs-SECRET-91b2",
}
DECODED = {"ok": "decoded"}


@dataclass
class Hostile:
    base_url: str = ""
    received: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    """``(path and query, headers, body)`` of every request."""


STATE = web.AppKey("hostile", Hostile)


def _layers(data: bytes, count: int) -> bytes:
    for _ in range(count):
        data = gzip.compress(data, compresslevel=1)
    return data


async def _record(request: web.Request) -> tuple[dict[str, str], bytes]:
    headers, body = dict(request.headers), await request.read()
    request.app[STATE].received.append((request.path_qs, headers, body))
    return headers, body


async def _handle(request: web.Request) -> web.StreamResponse:
    headers, body = await _record(request)
    kind, _, arg = request.match_info["tail"].partition("/")
    if kind == "layers":  # the JSON body, gzip-compressed ``arg`` times, and said so
        raw = _layers(json.dumps(DECODED).encode(), int(arg))
        coding = ", ".join(["gzip"] * int(arg))
        return web.Response(body=raw, headers={"Content-Encoding": coding})
    if kind == "coded":  # a coding the gateway did not offer
        return web.Response(body=b"\x1b\x00compressed", headers={"Content-Encoding": arg})
    if kind == "empty":  # no data to decode, whatever the header says
        return web.Response(status=204, headers={"Content-Encoding": "br, gzip"})
    if kind == "corrupt":
        return web.Response(body=b"this is not gzip", headers={"Content-Encoding": "gzip"})
    if kind == "nested-bomb":
        encoded = {"Content-Encoding": "gzip, gzip", "Content-Type": "application/json"}
        return web.Response(body=gzip.compress(GZIP_BOMB), headers=encoded)
    if kind == "straddle":  # the bearer token placed so that the 64 KiB cut falls inside it
        token = headers["Authorization"].removeprefix("Bearer ")
        text = "x" * (STORED_BODY_CAP - len(token) + 1) + token + "y" * 100
        return web.Response(text=text, content_type="text/plain")
    # A careless API that echoes everything it was sent, in lines no key name gives away.
    lines = [f"{name}: {value}" for name, value in headers.items()]
    echoed = {"lines": lines, "query": request.query_string, "body": body.decode()}
    return web.json_response(echoed)


@asynccontextmanager
async def hostile_api() -> AsyncIterator[Hostile]:
    state = Hostile()
    app = web.Application()
    app[STATE] = state
    app.router.add_route("*", "/{tail:.*}", _handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    assert site._server is not None
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    state.base_url = f"http://127.0.0.1:{port}"
    try:
        yield state
    finally:
        await runner.cleanup()


@pytest.fixture
async def api() -> AsyncIterator[Hostile]:
    async with hostile_api() as state:
        yield state


@dataclass
class Bench:
    executor: Executor
    store: LogStore
    path: Path

    async def database_bytes(self) -> bytes:
        """Everything the log wrote, after flushing and closing it."""
        await self.store.flush()
        await self.store.close()
        raw = b"".join(p.read_bytes() for p in self.path.parent.glob(self.path.name + "*"))
        assert raw, "the log database is empty"
        return raw


@pytest.fixture
async def bench(tmp_path: Path) -> AsyncIterator[Bench]:
    path = tmp_path / "log.db"
    engine = create_engine(f"sqlite:///{path}")
    await migrate(engine)
    # As the app builds it: the store knows the configured secrets, not what was made of them.
    store = LogStore(engine, Redactor(SECRETS.values()))
    await store.start()
    outbound = Outbound(EgressPolicy(("127.0.0.1",)))
    yield Bench(Executor(outbound, secrets=SECRETS, logstore=store), store, path)
    await outbound.close()
    await store.close()
    await engine.dispose()


def action(api: Hostile, path: str = "/echo", **fields: Any) -> HttpAction:
    fields.setdefault("name", "Hostile")
    parsed = parse_action({"url": api.base_url + path, **fields})
    assert isinstance(parsed, HttpAction)
    return parsed


async def run(bench: Bench, act: HttpAction, args: Any = None, **lead: str) -> Execution:
    conversation = Conversation(id="c1", agent_id="support", lead=lead, message="hi")
    return await bench.executor.execute_action(act, conversation, args, tool_call_id="call_1")


# --- item 9: a token endpoint that cannot be had is a result of the call ---------------------


@pytest.mark.parametrize(
    ("failure", "outcome"),
    [
        (EgressBlocked("10.0.0.5", "private address"), "blocked"),
        (TimeoutError(), "timeout"),
        (ConnectFailed("cannot connect to token.example: refused"), "connect_error"),
    ],
)
async def test_token_sender_failures_are_auth_errors_shared_by_waiters(
    failure: Exception, outcome: str
) -> None:
    calls: list[str] = []
    called, gate = asyncio.Event(), asyncio.Event()

    async def sender(url: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        calls.append(url)
        called.set()
        await gate.wait()  # the other callers queue up behind this refresh meanwhile
        raise failure

    tokens = OAuthTokens(sender)
    auth = OAuth2ClientCredentials(
        token_url="https://token.example/oauth/token", client_id="id", client_secret="s3cret-xyz"
    )
    waiting = [asyncio.ensure_future(tokens.token(auth, {})) for _ in range(5)]
    await called.wait()
    gate.set()
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(r, AuthError) and r.outcome == outcome for r in results)
    assert all(str(r).startswith("OAuth token request to token.example failed") for r in results)
    assert calls == ["https://token.example/oauth/token"]  # one try, its failure shared


async def test_blocked_token_url_is_a_blocked_record_and_sends_nothing(
    api: Hostile, bench: Bench
) -> None:
    auth = {
        "type": "oauth2_client_credentials",
        "token_url": "http://127.0.0.2:9/token",  # loopback, not in egress.allow
        "client_id": "client-abc",
        "client_secret": "{{secrets.CS}}",
    }
    result = await run(bench, action(api, auth=auth))
    assert result.outcome == "blocked"
    assert result.content == (
        "Action hostile was not run: the API's credentials could not be obtained: its token "
        "endpoint is not allowed by the gateway's network policy."
    )
    assert result.record.error is not None
    assert result.record.error.startswith("OAuth token request to 127.0.0.2 failed: blocked")
    assert api.received == []
    await bench.store.flush()
    [stored] = (await bench.store.query(outcome="blocked"))[0]
    assert stored.tool_call_id == "call_1"


# --- item 13: a non-ASCII header value is refused, naming the header -------------------------


@pytest.mark.parametrize(
    ("fields", "header"),
    [
        ({"headers": {"X-Customer-Name": "{{lead.name}}"}}, "X-Customer-Name"),
        ({"headers": {"X-Customer-Name": "Señor {{lead.email}}"}}, "X-Customer-Name"),
        ({"auth": {"type": "bearer", "token": "{{lead.name}}"}}, "Authorization"),
        ({"auth": {"type": "headers", "headers": {"X-Token": "{{lead.name}}"}}}, "X-Token"),
        ({"auth": {"type": "api_key", "name": "X-Key", "value": "{{lead.name}}"}}, "X-Key"),
    ],
)
async def test_non_ascii_header_value_is_rejected_naming_the_header(
    api: Hostile, bench: Bench, fields: dict[str, Any], header: str
) -> None:
    result = await run(bench, action(api, **fields), name="José Ñandú", email="a@b.c")
    assert result.outcome == "rejected"
    assert result.content == (
        f"Action hostile was not run: header {header!r} would get an invalid value: value "
        "contains non-ASCII characters, which the gateway does not send in headers (the action "
        "could pass this value in the query or the body instead)."
    )
    assert "José" not in result.content and "José" not in (result.record.error or "")
    assert api.received == []


async def test_ascii_header_value_is_sent_as_it_is(api: Hostile, bench: Bench) -> None:
    act = action(api, headers={"X-Customer-Name": "{{lead.name}}"})
    result = await run(bench, act, name="Jose Nandu")
    assert result.outcome == "success"
    assert api.received[0][1]["X-Customer-Name"] == "Jose Nandu"


# --- item 14: stacked content codings ---------------------------------------------------------


async def test_six_stacked_gzip_layers_are_decoded(api: Hostile, bench: Bench) -> None:
    result = await run(bench, action(api, "/layers/6"))
    assert result.outcome == "success"
    assert '<data>\n{"ok":"decoded"}\n</data>' in result.content
    assert result.record.response == {
        "status_code": 200,
        "body": json.dumps(DECODED),
        "truncated": False,
    }


async def test_empty_body_with_a_content_coding_is_no_error(api: Hostile, bench: Bench) -> None:
    result = await run(bench, action(api, "/empty"))
    assert result.outcome == "success"
    assert result.content == "Action hostile returned HTTP 204 with no content."


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        (f"/layers/{MAX_CONTENT_CODINGS + 1}", "9 content codings (at most 8 are decoded)"),
        ("/coded/br", "unsupported content coding 'br'"),
        ("/coded/gzip,zstd", "unsupported content coding 'zstd'"),
        ("/corrupt", "the body is not valid gzip data"),
    ],
)
async def test_undecodable_body_is_an_http_error_not_text(
    api: Hostile, bench: Bench, path: str, reason: str
) -> None:
    result = await run(bench, action(api, path))
    assert result.outcome == "http_error"
    assert (
        result.content == f"Action hostile failed: the API's answer could not be read ({reason})."
    )
    assert result.record.response == {"status_code": 200, "body": "", "truncated": False}
    assert result.record.error == f"the response body could not be decoded: {reason}"


async def test_nested_gzip_bomb_stops_at_the_cap(api: Hostile, bench: Bench) -> None:
    tracemalloc.start()
    result = await run(bench, action(api, "/nested-bomb"))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert result.outcome == "success"
    assert result.record.response is not None and result.record.response["truncated"] is True
    assert peak < 32 << 20  # 64 MiB of zeros under two layers were never inflated


# --- item 18: redact before the 64 KiB cut ----------------------------------------------------


async def test_bearer_token_cut_by_the_stored_body_cap_leaves_nothing(
    api: Hostile, bench: Bench
) -> None:
    token = SECRETS["API_TOKEN"]
    padding = "p" * (STORED_BODY_CAP - len(token) + 1)  # the request body's cut falls inside too
    act = action(
        api,
        "/straddle",
        method="POST",
        headers={"Content-Type": "text/plain"},
        body=padding + "{{secrets.API_TOKEN}}" + "q" * 100,
        auth={"type": "bearer", "token": "{{secrets.API_TOKEN}}"},
    )
    result = await run(bench, act)
    assert result.outcome == "success"
    assert api.received[0][2] == f"{padding}{token}{'q' * 100}".encode()
    record = result.record
    assert record.response is not None and record.response["truncated"] is True
    kept = "x" * (STORED_BODY_CAP - len(token) + 1) + REDACTED + "y" * 100
    assert record.response["body"] == kept[:STORED_BODY_CAP]
    assert record.request["body"] == f"{padding}{REDACTED}{'q' * 100}"[:STORED_BODY_CAP]
    assert token[:-1] not in result.content
    raw = await bench.database_bytes()
    for piece in (token, token[:-1], token[:-2]):
        assert piece.encode() not in raw, f"{piece!r} reached the database"


# --- item 19: by key name in bodies, literal credentials, filtered secrets -------------------

LITERALS = ("literal-bearer-0001", "literal-apikey-0002", "literal-query-0003")


async def test_password_key_in_a_json_request_body_is_redacted(api: Hostile, bench: Bench) -> None:
    act = action(
        api,
        method="POST",
        parameters={"password": {"required": True}},
        body={"user": "ann", "credentials": {"password": "{{args.password}}"}},
    )
    password = "correct-horse-battery"
    result = await run(bench, act, {"password": password})
    assert result.outcome == "success"
    assert json.loads(api.received[0][2]) == {"user": "ann", "credentials": {"password": password}}
    assert result.record.request["body"] == '{"user":"ann","credentials":"[REDACTED]"}'
    assert password not in result.content  # the API echoed the body back
    assert (await bench.database_bytes()).count(password.encode()) == 0


async def test_literal_credentials_echoed_by_the_api_are_redacted(
    api: Hostile, bench: Bench
) -> None:
    bearer, apikey, query = LITERALS
    act = action(
        api,
        f"/echo?api_key={query}",
        headers={"Authorization": f"Bearer {bearer}", "X-Api-Key": apikey},
    )
    result = await run(bench, act)
    assert result.outcome == "success"
    assert api.received[0][1]["X-Api-Key"] == apikey  # sent as written
    raw = await bench.database_bytes()
    for literal in LITERALS:
        assert literal not in result.content, f"{literal!r} reached the model"
        assert raw.count(literal.encode()) == 0, f"{literal!r} reached the database"


FILTERED = {
    "{{secrets.API_TOKEN|upper}}": SECRETS["API_TOKEN"].upper(),
    "{{secrets.MIXED|lower}}": SECRETS["MIXED"].lower(),
    "{{secrets.PADDED|trim}}": SECRETS["PADDED"].strip(),
    "{{ secrets.MIXED | trim | upper }}": SECRETS["MIXED"].upper(),
    "{{secrets.API_TOKEN|truncate(10, true, '', 0)}}": SECRETS["API_TOKEN"][:10],
}


@pytest.mark.parametrize("where", ["header", "query", "body"])
async def test_filtered_secrets_are_redacted_in_every_form(
    api: Hostile, bench: Bench, where: str
) -> None:
    templates = list(FILTERED)
    fields: dict[str, Any] = {}
    if where == "header":
        fields["headers"] = {f"X-Value-{n}": t for n, t in enumerate(templates)}
    elif where == "query":
        fields["query"] = {f"v{n}": t for n, t in enumerate(templates)}
    else:
        fields |= {"method": "POST", "body": {f"v{n}": t for n, t in enumerate(templates)}}
    result = await run(bench, action(api, **fields))
    assert result.outcome == "success"
    path_qs, headers, body = api.received[0]
    sent = f"{path_qs} {json.dumps(headers)} {body.decode()}"
    for form in FILTERED.values():
        assert form in sent or quote(form, safe="") in sent  # the API got each form
    raw = await bench.database_bytes()
    for form in FILTERED.values():
        assert form not in result.content, f"{form!r} reached the model"
        assert raw.count(form.encode()) == 0, f"{form!r} reached the database"


def test_json_text_keeps_its_shape_when_credential_keys_are_redacted() -> None:
    redactor = Redactor()
    body = '{"user": "ann",\n "password": "p\\"w-1", "token": null, "api_key": 123, "ok": true}'
    assert redactor.redact_body(body, "application/json") == (
        '{"user": "ann",\n "password": "[REDACTED]", "token": null, "api_key": "[REDACTED]", '
        '"ok": true}'
    )
    cut = '{"items": [{"secret": {"a": [1, 2]}}, {"client_secret": "abc'
    assert (
        redactor.redact_body(cut)
        == '{"items": [{"secret": "[REDACTED]"}, {"client_secret": "[REDACTED]"'
    )
    assert redactor.redact_body("a=1&password=hunter22", "application/x-www-form-urlencoded") == (
        "a=1&password=[REDACTED]"
    )


@pytest.mark.parametrize(
    "name",
    [
        *sorted(CREDENTIAL_PARAMS - {"key"}),
        *("X-Session-Id", "privateKey", "clientSecret", "AUTHORIZATION", "aws_credentials"),
    ],
)
def test_every_credential_name_is_redacted_in_json_text(name: str) -> None:
    body = json.dumps({"id": 1, name: "v-12345678", "items": [name]}, indent=1)
    redacted = Redactor().redact_body(body)
    assert json.loads(redacted) == {"id": 1, name: REDACTED, "items": [name]}
    escaped = body.replace(f'"{name}":', '"' + "".join(f"\\u{ord(c):04x}" for c in name) + '":')
    assert "v-12345678" not in Redactor().redact_body(escaped)


def test_a_secrets_beginning_at_the_end_of_cut_text_is_redacted() -> None:
    redactor = Redactor([SECRETS["API_TOKEN"]])
    assert redactor.redact_cut("before tok-SECRET-7f") == f"before {REDACTED}"
    assert redactor.redact_cut("before tok") == "before tok"  # 3 characters say nothing
    assert redactor.redact_cut("no secret here") == "no secret here"
