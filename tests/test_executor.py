"""The execution engine against a real local HTTP server: escaping, auth, deadlines, caps,
egress and redaction, each checked by what the server received and what the log stored."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

import pytest

from gateway.definitions.actions import HttpAction
from gateway.definitions.config import parse_action
from gateway.engine.context import Conversation
from gateway.engine.executor import Execution, Executor
from gateway.net.egress import EgressPolicy
from gateway.net.outbound import Outbound
from gateway.redaction import Redactor
from gateway.stores.db import migrate
from gateway.stores.engines import create_engine
from gateway.stores.logs import LogStore
from tests.support.action_api import ActionAPI, body_json, running_api

SECRETS = {
    "API_TOKEN": "tok-SECRET-7f3a9c",
    "CLIENT_ID": "client-abc",
    "CLIENT_SECRET": "cs-SECRET-91b2",
    "PASSWORD": "pw-SECRET-44d1",
    "QKEY": "key/SECRET+&=5e",
}


@pytest.fixture
async def api() -> AsyncIterator[ActionAPI]:
    async with running_api() as state:
        yield state


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[LogStore]:
    engine = create_engine(f"sqlite:///{tmp_path / 'log.db'}")
    await migrate(engine)
    log = LogStore(engine, Redactor(SECRETS.values()))
    await log.start()
    yield log
    await log.close()
    await engine.dispose()


ExecutorFactory = Callable[..., Executor]


@pytest.fixture
async def make_executor(store: LogStore) -> AsyncIterator[ExecutorFactory]:
    made: list[Outbound] = []

    def factory(allow: tuple[str, ...] = ("127.0.0.1",), **kw: Any) -> Executor:
        outbound = Outbound(EgressPolicy(allow), **kw)
        made.append(outbound)
        return Executor(outbound, secrets=SECRETS, logstore=store)

    yield factory
    for outbound in made:
        await outbound.close()


def action(api: ActionAPI, **fields: Any) -> HttpAction:
    fields.setdefault("name", "Test action")
    url = fields.pop("path", "/echo/x")
    fields.setdefault("url", api.base_url + url)
    parsed = parse_action(fields)
    assert isinstance(parsed, HttpAction)
    return parsed


def conv(**lead: Any) -> Conversation:
    return Conversation(id="c1", agent_id="support", lead=lead, message="hello")


async def run(executor: Executor, act: HttpAction, args: Any = None, **lead: Any) -> Execution:
    return await executor.execute_action(act, conv(**lead), args, tool_call_id="call_1")


# --- escaping by context --------------------------------------------------------------------

HOSTILE = "a/../b?c=d&e#f %0d\u202e\"'<x>"


async def test_path_segment_escaping(api: ActionAPI, make_executor: ExecutorFactory) -> None:
    act = action(api, path="/echo/orders/{{args.id}}/items", parameters={"id": {"required": True}})
    result = await run(make_executor(), act, {"id": HOSTILE})
    assert result.outcome == "success"
    got = api.last()
    assert got.raw_path == "/echo/orders/" + quote(HOSTILE, safe="") + "/items"
    assert got.query_string == ""  # the value's "?" did not start a query


@pytest.mark.parametrize("value", [".", ".."])
async def test_dot_segments_refused(
    api: ActionAPI, make_executor: ExecutorFactory, value: str
) -> None:
    act = action(api, path="/echo/{{args.id}}", parameters={"id": {"required": True}})
    result = await run(make_executor(), act, {"id": value})
    assert result.outcome == "rejected"
    assert api.received == []


async def test_query_value_escaping(api: ActionAPI, make_executor: ExecutorFactory) -> None:
    act = action(
        api,
        path="/echo/q?email={{lead.email}}&fixed=1",
        query={"q": "{{args.q}}"},
        parameters={"q": {}},
    )
    result = await run(make_executor(), act, {"q": "x&admin=true"}, email="a+b@c.d&role=admin")
    assert result.outcome == "success"
    parsed = parse_qs(api.last().query_string)
    assert parsed == {"email": ["a+b@c.d&role=admin"], "fixed": ["1"], "q": ["x&admin=true"]}


async def test_optional_query_value_left_out(
    api: ActionAPI, make_executor: ExecutorFactory
) -> None:
    act = action(api, query={"q": "{{args.q}}", "always": "yes"}, parameters={"q": {}})
    await run(make_executor(), act, {})
    assert api.last().query_string == "always=yes"


@pytest.mark.parametrize(
    "value", ["x\r\nX-Injected: 1", "x\nY", "x\rY", "x\x00y", "x\u2028y", "x" * 9000]
)
async def test_header_injection_refused(
    api: ActionAPI, make_executor: ExecutorFactory, store: LogStore, value: str
) -> None:
    act = action(api, headers={"X-Customer": "{{lead.name}}"})
    result = await run(make_executor(), act, name=value)
    assert result.outcome == "rejected"
    assert "X-Customer" in result.content
    assert api.received == []


async def test_json_body_leaves_are_data(api: ActionAPI, make_executor: ExecutorFactory) -> None:
    hostile = '","admin":true,"x":"{{ secrets.API_TOKEN }}'
    act = action(
        api,
        method="POST",
        body={
            "note": "Customer says: {{message.content}}",
            "qty": "{{args.qty}}",
            "name": "{{lead.name}}",
            "opt": "{{args.opt}}",
        },
        parameters={"qty": {"type": "integer", "required": True}, "opt": {}},
    )
    result = await make_executor().execute_action(
        act, Conversation(id="c1", lead={"name": hostile}, message=hostile), {"qty": 3}
    )
    assert result.outcome == "success"
    sent = body_json(api.last())
    assert sent == {"note": "Customer says: " + hostile, "qty": 3, "name": hostile}
    assert SECRETS["API_TOKEN"] not in api.last().body.decode()  # inserted once, never rendered


async def test_missing_required_variable_sends_nothing(
    api: ActionAPI, make_executor: ExecutorFactory, store: LogStore
) -> None:
    act = action(api, path="/echo/c?email={{lead.email}}")
    result = await run(make_executor(), act)
    assert result.outcome == "rejected"
    assert "lead.email" in result.content
    assert api.received == []
    await store.flush()
    [record] = (await store.query())[0]
    assert record.outcome == "rejected" and "lead.email" in (record.error or "")


async def test_bad_arguments_rejected_before_sending(
    api: ActionAPI, make_executor: ExecutorFactory
) -> None:
    act = action(api, parameters={"n": {"type": "integer", "required": True}})
    for raw in ['{"n": "x"}', '{"n": 1, "n": 2}', '{"n": NaN}', '{"n": 1, "zz": 2}', "[1]", "{"]:
        result = await run(make_executor(), act, raw)
        assert result.outcome == "rejected", raw
        assert "Invalid arguments" in result.content
    assert api.received == []


# --- auth -----------------------------------------------------------------------------------


async def test_bearer(api: ActionAPI, make_executor: ExecutorFactory) -> None:
    act = action(api, auth={"type": "bearer", "token": "{{secrets.API_TOKEN}}"})
    result = await run(make_executor(), act)
    assert api.last().headers["Authorization"] == f"Bearer {SECRETS['API_TOKEN']}"
    assert result.record.request["headers"]["Authorization"] == "[REDACTED]"


async def test_api_key_in_header_and_query(api: ActionAPI, make_executor: ExecutorFactory) -> None:
    ex = make_executor()
    act = action(api, auth={"type": "api_key", "name": "X-Api-Key", "value": "{{secrets.QKEY}}"})
    await run(ex, act)
    assert api.last().headers["X-Api-Key"] == SECRETS["QKEY"]
    act = action(
        api,
        path="/echo/k?a=1",
        auth={"type": "api_key", "name": "key", "in": "query", "value": "{{secrets.QKEY}}"},
    )
    result = await run(ex, act)
    assert parse_qs(api.last().query_string) == {"a": ["1"], "key": [SECRETS["QKEY"]]}
    assert SECRETS["QKEY"] not in result.record.request["url"]
    assert quote(SECRETS["QKEY"], safe="") not in result.record.request["url"]


async def test_basic(api: ActionAPI, make_executor: ExecutorFactory) -> None:
    act = action(api, auth={"type": "basic", "username": "svc", "password": "{{secrets.PASSWORD}}"})
    result = await run(make_executor(), act)
    expected = base64.b64encode(f"svc:{SECRETS['PASSWORD']}".encode()).decode()
    assert api.last().headers["Authorization"] == f"Basic {expected}"
    assert expected not in json.dumps(result.record.to_dict())


async def test_plain_headers_auth(api: ActionAPI, make_executor: ExecutorFactory) -> None:
    act = action(api, auth={"type": "headers", "headers": {"X-Token": "{{secrets.API_TOKEN}}"}})
    await run(make_executor(), act)
    assert api.last().headers["X-Token"] == SECRETS["API_TOKEN"]


def oauth_action(api: ActionAPI) -> HttpAction:
    return action(
        api,
        path="/protected",
        auth={
            "type": "oauth2_client_credentials",
            "token_url": api.base_url + "/token",
            "client_id": "{{secrets.CLIENT_ID}}",
            "client_secret": "{{secrets.CLIENT_SECRET}}",
        },
    )


async def test_oauth_token_cached_and_refreshed_on_401(
    api: ActionAPI, make_executor: ExecutorFactory
) -> None:
    ex = make_executor()
    act = oauth_action(api)
    assert (await run(ex, act)).outcome == "success"
    assert (await run(ex, act)).outcome == "success"
    assert api.token_requests == 1  # cached
    api.current_token = "rotated-by-the-server"  # the cached token is now refused with 401
    result = await run(ex, act)
    assert result.outcome == "success"
    assert api.token_requests == 2  # one refresh after the 401, then the retry passed


async def test_oauth_single_refresh_under_concurrency(
    api: ActionAPI, make_executor: ExecutorFactory
) -> None:
    ex = make_executor()
    act = oauth_action(api)
    api.token_gate = asyncio.Event()
    tasks = [asyncio.create_task(run(ex, act)) for _ in range(20)]
    while api.token_requests == 0:  # noqa: ASYNC110 - yield until the first refresh is in flight
        await asyncio.sleep(0)
    api.token_gate.set()
    results = await asyncio.gather(*tasks)
    assert {r.outcome for r in results} == {"success"}
    assert api.token_requests == 1


# --- retries, deadlines, caps ---------------------------------------------------------------


async def test_get_retries_503_then_succeeds(
    api: ActionAPI, make_executor: ExecutorFactory
) -> None:
    api.fail_times = 2
    result = await run(make_executor(), action(api, path="/flaky"))
    assert result.outcome == "success"
    assert len(api.received) == 3


async def test_post_is_not_retried(api: ActionAPI, make_executor: ExecutorFactory) -> None:
    api.fail_times = 2
    result = await run(make_executor(), action(api, path="/flaky", method="POST", body={}))
    assert result.outcome == "http_error"
    assert result.record.response is not None and result.record.response["status_code"] == 503
    assert len(api.received) == 1
    assert "Idempotency-Key" in api.last().headers


async def test_retry_after_beyond_deadline_is_not_waited(
    api: ActionAPI, make_executor: ExecutorFactory
) -> None:
    act = action(api, path="/status/503?retry_after=120", timeout_s=2)
    result = await run(make_executor(), act)
    assert result.outcome == "http_error"
    assert len(api.received) == 1


async def test_deadline_against_dripping_server(
    api: ActionAPI, make_executor: ExecutorFactory
) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    result = await run(make_executor(), action(api, path="/drip", timeout_s=0.5))
    elapsed = loop.time() - started
    assert result.outcome == "timeout"
    assert elapsed < 2.0  # the drip would go on for 30 s


async def test_size_cap_on_huge_response(api: ActionAPI, make_executor: ExecutorFactory) -> None:
    result = await run(make_executor(max_body_bytes=100_000), action(api, path="/huge"))
    assert result.outcome == "success"
    assert result.record.response is not None and result.record.response["truncated"] is True
    assert "truncated" in result.content


async def test_gzip_bomb_stops_at_the_cap(api: ActionAPI, make_executor: ExecutorFactory) -> None:
    import tracemalloc

    tracemalloc.start()
    result = await run(make_executor(), action(api, path="/bomb"))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert result.outcome == "success"
    assert result.record.response is not None and result.record.response["truncated"] is True
    assert peak < 32 << 20  # 64 MiB of zeros were never inflated


# --- egress ---------------------------------------------------------------------------------


async def test_private_address_blocked_by_default(
    api: ActionAPI, make_executor: ExecutorFactory, store: LogStore
) -> None:
    result = await run(make_executor(allow=()), action(api))
    assert result.outcome == "blocked"
    assert api.received == []
    assert "127.0.0.1" not in result.content  # the model gets a generic message
    await store.flush()
    [record] = (await store.query(outcome="blocked"))[0]
    assert "127.0.0.1" in (record.error or "")


async def test_redirect_to_private_address_not_followed(
    api: ActionAPI, make_executor: ExecutorFactory
) -> None:
    result = await run(make_executor(), action(api, path="/redirect"))
    assert result.outcome == "http_error"
    assert result.record.response is not None and result.record.response["status_code"] == 302
    assert "redirect" in result.content.lower()
    assert [r.path for r in api.received] == ["/redirect"]


async def test_connect_error(make_executor: ExecutorFactory) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    act = parse_action({"name": "dead", "url": f"http://127.0.0.1:{port}/x", "retries": 0})
    assert isinstance(act, HttpAction)
    result = await run(make_executor(), act)
    assert result.outcome == "connect_error"


# --- redaction ------------------------------------------------------------------------------


async def test_no_secret_reaches_the_database(
    api: ActionAPI, make_executor: ExecutorFactory, store: LogStore, tmp_path: Path
) -> None:
    ex = make_executor()
    auths = [
        {"type": "bearer", "token": "{{secrets.API_TOKEN}}"},
        {"type": "api_key", "name": "apikey", "in": "query", "value": "{{secrets.QKEY}}"},
        {"type": "basic", "username": "svc", "password": "{{secrets.PASSWORD}}"},
        {"type": "headers", "headers": {"X-Custom": "{{secrets.API_TOKEN}}"}},
    ]
    for auth in auths:
        result = await run(ex, action(api, path="/secret-echo", auth=auth))
        assert result.outcome == "success"
        for secret in SECRETS.values():
            assert secret not in result.content
    await run(ex, oauth_action(api))
    await run(ex, action(api, path="/status/500", headers={"X-Key": "{{secrets.API_TOKEN}}"}))
    await store.flush()
    await store.close()
    derived = [
        base64.b64encode(f"svc:{SECRETS['PASSWORD']}".encode()).decode(),
        quote(SECRETS["QKEY"], safe=""),
        api.current_token,
        *SECRETS.values(),
    ]
    derived.remove(SECRETS["CLIENT_ID"])  # a client id is an identifier, not a credential
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("log.db*"))  # noqa: ASYNC240
    assert raw, "the log database is empty"
    for secret in derived:
        assert secret.encode() not in raw, f"{secret!r} reached the database"
