"""End to end: a real ``actiongate serve`` process, driven by the official openai SDK.

One gateway process serves the whole module (``examples/demo.yaml`` pointed at a scripted upstream
and the sample customer API, with fresh credentials). Each test scripts the upstream, talks to the
gateway as a customer's app would (sync client, async client, streaming), and then checks what the
action API received and what ``actiongate logs --json`` shows: one record per execution,
``injected`` where the model got the result, and no credential anywhere in the database.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import openai
import pytest
from openai import AsyncOpenAI, OpenAI
from openai.types.chat import (
    ChatCompletion,
    ChatCompletionFunctionToolParam,
    ChatCompletionMessageParam,
    ChatCompletionToolMessageParam,
    ChatCompletionUserMessageParam,
)

from examples import customer_api
from examples.scripted_upstream import ScriptedUpstream, running_upstream
from tests.support.serve import (
    ActionAPI,
    Credentials,
    GatewayProcess,
    LoopThread,
    demo_config,
    free_port,
    running_action_api,
    start_gateway,
)

PLUS_EMAIL = "a+b@example.com"
JANE = "jane@example.com"
RECORD_FIELDS = {
    "id",
    "timestamp",
    "agent_id",
    "conversation_id",
    "action",
    "tool_call_id",
    "request",
    "response",
    "duration_ms",
    "outcome",
    "error",
    "injected",
    "injected_content",
}
TOKEN_REQUEST = "POST /crm/oauth/token"


@dataclass
class E2E:
    """The module's gateway process and the servers behind it."""

    gateway: GatewayProcess
    upstream: ScriptedUpstream
    api: ActionAPI
    credentials: Credentials
    servers: LoopThread

    def script(self, replies: list[dict[str, Any]]) -> None:
        """Queue upstream replies (on the servers' loop, which reads the queue)."""
        self.servers.call(self.upstream.script, replies)

    def reset(self) -> None:
        """Forget queued replies and every request the servers received."""
        self.servers.call(self.upstream.reset)
        self.servers.call(self.api.received.clear)

    def client(self, gateway: GatewayProcess | None = None, **options: Any) -> OpenAI:
        """A sync SDK client of the module's gateway (or of ``gateway``)."""
        options.setdefault("api_key", self.credentials.client_key)
        base_url = (gateway or self.gateway).base_url
        return OpenAI(base_url=base_url, max_retries=0, timeout=20, **options)

    def async_client(self, gateway: GatewayProcess | None = None, **options: Any) -> AsyncOpenAI:
        """An async SDK client of the module's gateway (or of ``gateway``)."""
        options.setdefault("api_key", self.credentials.client_key)
        base_url = (gateway or self.gateway).base_url
        return AsyncOpenAI(base_url=base_url, max_retries=0, timeout=20, **options)

    def own_gateway(self, directory: Path) -> GatewayProcess:
        """Another gateway process on the same config, with a database of its own."""
        database = f"sqlite:///{directory / 'own.db'}"
        config = demo_config(self.upstream, self.api, self.credentials, database)
        return start_gateway(directory, config, self.credentials.environ())

    def tool_messages(self) -> list[dict[str, Any]]:
        """Every tool message the upstream was sent, in order (repeats included)."""
        return [
            m for body in self.upstream.requests for m in body["messages"] if m["role"] == "tool"
        ]


@pytest.fixture(scope="module")
def e2e(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2E]:
    credentials = Credentials()
    servers = LoopThread()
    try:
        upstream = servers.enter(running_upstream(api_key=credentials.upstream_key))
        api = servers.enter(running_action_api(credentials))
        directory = tmp_path_factory.mktemp("e2e")
        config = demo_config(upstream, api, credentials, f"sqlite:///{directory / 'gateway.db'}")
        # An agent whose upstream is a closed port: unreachable.
        closed = f"http://127.0.0.1:{free_port()}/v1"
        config["agents"].append(
            {
                "id": "offline",
                "upstream": {"base_url": closed},
                "actions": [],
                "api_keys": [credentials.client_key],
            }
        )
        with pytest.MonkeyPatch.context() as patch:
            plus = {**customer_api.CUSTOMERS[JANE], "email": PLUS_EMAIL, "plan": "Team"}
            patch.setitem(customer_api.CUSTOMERS, PLUS_EMAIL, plus)
            gateway = start_gateway(directory, config, credentials.environ())
            try:
                yield E2E(gateway, upstream, api, credentials, servers)
            finally:
                status = gateway.stop()
        assert status == 0, gateway.logs_text()
        stored = gateway.database_bytes()
        assert all(secret.encode() not in stored for secret in credentials.all())
    finally:
        servers.close()


@pytest.fixture(autouse=True)
def fresh(e2e: E2E) -> None:
    e2e.reset()


def user(text: str) -> ChatCompletionUserMessageParam:
    return {"role": "user", "content": text}


def answer(call_id: str, content: Any) -> ChatCompletionToolMessageParam:
    """The widget's answer to a form, button or confirmation call."""
    return {"role": "tool", "tool_call_id": call_id, "content": json.dumps(content)}


def said(completion: ChatCompletion) -> ChatCompletionMessageParam:
    """The assistant message of a completion, as history for the next request."""
    return cast("ChatCompletionMessageParam", completion.choices[0].message.to_dict())


def call(name: str, arguments: dict[str, Any] | None = None, id: str = "") -> dict[str, Any]:
    """A scripted tool call."""
    out: dict[str, Any] = {"name": name, "arguments": arguments or {}}
    if id:
        out["id"] = id
    return out


def new_conversation(**context: Any) -> dict[str, Any]:
    return {"id": f"e2e-{uuid.uuid4().hex[:12]}", **context}


def extension(response: Any) -> dict[str, Any]:
    """The ``actiongate`` object of an SDK completion or chunk."""
    extra = response.model_extra or {}
    assert "actiongate" in extra, response
    ext: dict[str, Any] = extra["actiongate"]
    return ext


def check_log(
    e2e: E2E,
    conversation_id: str,
    executions: list[dict[str, Any]],
    *,
    not_injected: frozenset[str] = frozenset({"pending_confirmation"}),
) -> dict[str, dict[str, Any]]:
    """Check the stored log of one conversation against the executions the client was told of.

    Exactly one record per execution; ``injected`` (with exactly what the model was sent) for
    every outcome not in ``not_injected``; no credential, nor any token or key the action API
    received, anywhere in the database file.

    Returns:
        The records by id.
    """
    records = e2e.gateway.records(conversation_id)
    by_id = {r["id"]: r for r in records}
    assert len(by_id) == len(records) == len(executions)
    assert set(by_id) == {e["id"] for e in executions}
    sent = [m["content"] for m in e2e.tool_messages()]
    for execution in executions:
        record = by_id[execution["id"]]
        assert set(record) == RECORD_FIELDS
        assert record["agent_id"] == "support" and record["conversation_id"] == conversation_id
        assert record["action"] == execution["action"]
        assert record["outcome"] == execution["outcome"]
        if execution["outcome"] in not_injected:
            assert record["injected"] is False, record
        else:
            assert record["injected"] is True, record
            assert any(record["injected_content"] in content for content in sent), record
    credentials = set(e2e.credentials.all())
    for received in e2e.api.received:
        for name in ("Authorization", "X-Api-Key"):
            if name in received.headers:
                credentials.add(received.headers[name].removeprefix("Bearer "))
    stored = e2e.gateway.database_bytes()
    leaked = [c for c in credentials if c.encode() in stored]
    assert leaked == []
    assert not e2e.upstream.state.queue, "a scripted reply was not used"
    return by_id


# --- 1. lookup by {{lead.email}} ------------------------------------------------------------


def test_lookup_by_lead_email_is_url_encoded(e2e: E2E) -> None:
    conversation = new_conversation(lead={"email": PLUS_EMAIL})
    e2e.script(
        [
            {"tool_calls": [call("get_customer_account", id="call_lookup")]},
            {"content": "You are on the Team plan."},
        ]
    )
    with e2e.client() as client:
        completion = client.chat.completions.create(
            model="support",
            messages=[user("Which plan am I on?")],
            extra_body={"conversation": conversation},
        )
    choice = completion.choices[0]
    assert choice.message.content == "You are on the Team plan."
    assert choice.finish_reason == "stop"
    [got] = e2e.api.received
    assert got.raw_path == "/crm/customers?email=a%2Bb%40example.com"
    assert got.headers["Authorization"] == f"Bearer {e2e.credentials.crm_key}"
    tool_message = e2e.upstream.requests[1]["messages"][-1]
    assert tool_message["tool_call_id"] == "call_lookup"
    assert "Team" in tool_message["content"] and PLUS_EMAIL in tool_message["content"]
    assert "conversation" not in e2e.upstream.requests[0]
    ext = extension(completion)
    assert ext["conversation_id"] == conversation["id"]
    [execution] = ext["executions"]
    assert execution["action"] == "get_customer_account"
    assert execution["outcome"] == "success" and execution["status_code"] == 200
    assert [m["role"] for m in ext["messages"]] == ["assistant", "tool"]
    records = check_log(e2e, conversation["id"], ext["executions"])
    record = records[execution["id"]]
    assert record["tool_call_id"] == "call_lookup"
    assert record["request"]["headers"]["Authorization"] == "[REDACTED]"


# --- 2. parallel tool calls -----------------------------------------------------------------


async def test_parallel_tool_calls_both_run(e2e: E2E) -> None:
    conversation = new_conversation(lead={"email": JANE})
    e2e.script(
        [
            {
                "tool_calls": [
                    call("look_up_order", {"order_number": "A-10023"}, id="call_one"),
                    call("look_up_order", {"order_number": "A-10024"}, id="call_two"),
                ]
            },
            {"content": "One has shipped, the other is being processed."},
        ]
    )
    async with e2e.async_client() as client:
        completion = await client.chat.completions.create(
            model="support",
            messages=[user("Where are my orders A-10023 and A-10024?")],
            extra_body={"conversation": conversation},
        )
    assert completion.choices[0].message.content == (
        "One has shipped, the other is being processed."
    )
    assert sorted(e2e.api.paths()) == ["GET /crm/orders/A-10023", "GET /crm/orders/A-10024"]
    assert all(r.headers["X-Api-Key"] == e2e.credentials.orders_key for r in e2e.api.received)
    second = e2e.upstream.requests[1]["messages"]
    assert [c["id"] for c in second[-3]["tool_calls"]] == ["call_one", "call_two"]
    tools = {m["tool_call_id"]: m["content"] for m in second[-2:]}
    assert "shipped" in tools["call_one"] and "processing" in tools["call_two"]
    ext = extension(completion)
    assert [e["status_code"] for e in ext["executions"]] == [200, 200]
    check_log(e2e, conversation["id"], ext["executions"])


# --- 3. a client tool -----------------------------------------------------------------------

WEATHER_TOOL: ChatCompletionFunctionToolParam = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def test_client_tool_is_passed_through(e2e: E2E) -> None:
    conversation = new_conversation()
    e2e.script([{"tool_calls": [call("get_weather", {"city": "Oslo"}, id="call_weather")]}])
    with e2e.client() as client:
        completion = client.chat.completions.create(
            model="support",
            messages=[user("Weather in Oslo?")],
            tools=[WEATHER_TOOL],
            extra_body={"conversation": conversation},
        )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    [tool_call] = choice.message.tool_calls or []
    assert tool_call.id == "call_weather" and tool_call.type == "function"
    assert tool_call.function.name == "get_weather"
    assert json.loads(tool_call.function.arguments) == {"city": "Oslo"}
    assert e2e.api.received == [] and len(e2e.upstream.requests) == 1
    offered = {t["function"]["name"] for t in e2e.upstream.requests[0]["tools"]}
    assert {"get_weather", "get_customer_account"} <= offered
    assert extension(completion)["executions"] == []
    check_log(e2e, conversation["id"], [])


async def test_client_tool_is_passed_through_when_streaming(e2e: E2E) -> None:
    conversation = new_conversation()
    arguments = {"city": "Trondheim, Norway, in the middle of the winter"}
    e2e.script([{"tool_calls": [call("get_weather", arguments, id="call_weather")]}])
    async with e2e.async_client() as client:
        stream = await client.chat.completions.create(
            model="support",
            messages=[user("Weather in Trondheim?")],
            tools=[WEATHER_TOOL],
            stream=True,
            extra_body={"conversation": conversation},
        )
        chunks = [chunk async for chunk in stream]
    deltas = [d for c in chunks if c.choices for d in c.choices[0].delta.tool_calls or []]
    assert [d.index for d in deltas] == [0]
    [delta] = deltas
    assert delta.id == "call_weather" and delta.function is not None
    assert delta.function.name == "get_weather"
    assert json.loads(delta.function.arguments or "") == arguments
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert extension(chunks[-1])["executions"] == []
    assert e2e.api.received == []
    check_log(e2e, conversation["id"], [])


# --- 4. a form round trip -------------------------------------------------------------------


async def test_form_round_trip_captures_lead_email(e2e: E2E) -> None:
    conversation = new_conversation()
    e2e.script(
        [{"tool_calls": [call("return_request", {"order_number": "A-10023"}, id="call_form")]}]
    )
    messages: list[ChatCompletionMessageParam] = [user("I want to return order A-10023.")]
    async with e2e.async_client() as client:
        first = await client.chat.completions.create(
            model="support", messages=messages, extra_body={"conversation": conversation}
        )
        assert first.choices[0].finish_reason == "tool_calls"
        [form_call] = first.choices[0].message.tool_calls or []
        assert form_call.id == "call_form"
        [ui] = extension(first)["ui"]
        assert ui["kind"] == "form" and ui["tool_call_id"] == "call_form"
        assert ui["action"] == "return_request" and ui["title"] == "Start a return"
        prefilled = {f["name"]: f.get("value") for f in ui["fields"]}
        assert prefilled == {
            "email": None,
            "order_number": "A-10023",
            "reason": None,
            "notes": None,
        }
        assert e2e.api.received == []

        # The customer fills the form in; the widget answers the call with the values.
        values = {"email": JANE, "order_number": "A-10023", "reason": "Damaged"}
        messages += [
            said(first),
            answer("call_form", values),
        ]
        e2e.script([{"content": "Your return label is on its way."}])
        second = await client.chat.completions.create(
            model="support",
            messages=messages,
            extra_body={"conversation": {"id": conversation["id"]}},
        )
        assert second.choices[0].message.content == "Your return label is on its way."
        [submitted] = e2e.api.received
        assert f"{submitted.method} {submitted.raw_path}" == "POST /crm/returns"
        assert submitted.json()["email"] == JANE and submitted.json()["reason"] == "Damaged"
        told = e2e.upstream.requests[-1]["messages"][-1]
        assert told["tool_call_id"] == "call_form"
        assert "submitted the form" in told["content"] and "RMA-" in told["content"]
        submit_executions = extension(second)["executions"]
        assert [e["status_code"] for e in submit_executions] == [201]

        # Later in the same conversation, without any lead: the captured email is used.
        messages += [said(second), user("And which plan am I on?")]
        e2e.script(
            [
                {"tool_calls": [call("get_customer_account", id="call_plan")]},
                {"content": "You are on the Pro plan."},
            ]
        )
        third = await client.chat.completions.create(
            model="support",
            messages=messages,
            extra_body={"conversation": {"id": conversation["id"]}},
        )
    assert third.choices[0].message.content == "You are on the Pro plan."
    assert e2e.api.received[-1].raw_path == "/crm/customers?email=jane%40example.com"
    lookup = extension(third)["executions"]
    assert [e["status_code"] for e in lookup] == [200]
    check_log(e2e, conversation["id"], submit_executions + lookup)


async def test_invalid_form_answer_is_422_and_nothing_is_sent(e2e: E2E) -> None:
    conversation = new_conversation()
    e2e.script(
        [{"tool_calls": [call("return_request", {"order_number": "A-10023"}, id="call_form")]}]
    )
    async with e2e.async_client() as client:
        first = await client.chat.completions.create(
            model="support",
            messages=[user("Return A-10023 please")],
            extra_body={"conversation": conversation},
        )
        values = {"email": "not an email", "order_number": "A-10023", "reason": "Damaged"}
        messages: list[ChatCompletionMessageParam] = [
            user("Return A-10023 please"),
            said(first),
            answer("call_form", values),
        ]
        with pytest.raises(openai.UnprocessableEntityError) as caught:
            await client.chat.completions.create(
                model="support", messages=messages, extra_body={"conversation": conversation}
            )
    assert caught.value.status_code == 422 and caught.value.param == "email"
    assert e2e.api.received == [] and len(e2e.upstream.requests) == 1
    check_log(e2e, conversation["id"], [])


# --- 5. a button ----------------------------------------------------------------------------


def test_button_click_runs_its_request(e2e: E2E) -> None:
    conversation = new_conversation(lead={"email": JANE})
    e2e.script([{"tool_calls": [call("start_refund", id="call_button")]}])
    messages: list[ChatCompletionMessageParam] = [user("Please refund my latest order.")]
    with e2e.client() as client:
        first = client.chat.completions.create(
            model="support", messages=messages, extra_body={"conversation": conversation}
        )
        assert first.choices[0].finish_reason == "tool_calls"
        [ui] = extension(first)["ui"]
        assert ui == {
            "tool_call_id": "call_button",
            "kind": "button",
            "action": "start_refund",
            "label": "Start refund",
            "method": "POST",
        }
        assert e2e.api.received == []

        messages += [
            said(first),
            answer("call_button", {"clicked": True}),
        ]
        e2e.script([{"content": "Your refund has been started."}])
        second = client.chat.completions.create(
            model="support", messages=messages, extra_body={"conversation": conversation}
        )
    assert second.choices[0].message.content == "Your refund has been started."
    [clicked] = e2e.api.received
    assert f"{clicked.method} {clicked.raw_path}" == "POST /crm/refunds/latest"
    assert clicked.json() == {"email": JANE, "source": "chat"}
    told = e2e.upstream.requests[-1]["messages"][-1]
    assert "clicked 'Start refund'" in told["content"] and "re_" in told["content"]
    ext = extension(second)
    assert [(e["outcome"], e["status_code"]) for e in ext["executions"]] == [("success", 201)]
    check_log(e2e, conversation["id"], ext["executions"])


# --- 6. confirmations -----------------------------------------------------------------------


@pytest.mark.parametrize("accepted", [False, True], ids=["declined", "accepted"])
async def test_confirmation(e2e: E2E, accepted: bool) -> None:
    conversation = new_conversation(lead={"email": JANE})
    arguments = {"order_number": "A-10023", "reason": "damaged"}
    e2e.script([{"tool_calls": [call("submit_refund", arguments, id="call_confirm")]}])
    messages: list[ChatCompletionMessageParam] = [
        user("My mugs from A-10023 arrived broken, refund please.")
    ]
    async with e2e.async_client() as client:
        first = await client.chat.completions.create(
            model="support", messages=messages, extra_body={"conversation": conversation}
        )
        assert first.choices[0].finish_reason == "tool_calls"
        [ui] = extension(first)["ui"]
        assert ui["kind"] == "confirm" and ui["action"] == "submit_refund"
        assert ui["method"] == "POST" and ui["arguments"] == arguments
        pending = extension(first)["executions"]
        assert [e["outcome"] for e in pending] == ["pending_confirmation"]
        assert e2e.api.received == []  # nothing is sent before the customer says yes

        messages += [
            said(first),
            answer("call_confirm", {"confirmed": accepted}),
        ]
        e2e.script([{"content": "Done." if accepted else "OK, I did not refund it."}])
        second = await client.chat.completions.create(
            model="support", messages=messages, extra_body={"conversation": conversation}
        )
    answered = extension(second)["executions"]
    told = e2e.upstream.requests[-1]["messages"][-1]
    assert told["tool_call_id"] == "call_confirm"
    if accepted:
        assert [(e["outcome"], e["status_code"]) for e in answered] == [("success", 201)]
        # The OAuth token is fetched now, unless an earlier test left one in the cache.
        assert [p for p in e2e.api.paths() if p != TOKEN_REQUEST] == ["POST /crm/refunds"]
        refund = e2e.api.received[-1]
        assert refund.headers["Authorization"].startswith("Bearer demo-token-")
        assert refund.json()["order_number"] == "A-10023"
        assert refund.json()["customer_email"] == JANE
        assert "re_" in told["content"] and "4242424242424242" not in told["content"]
    else:
        assert [e["outcome"] for e in answered] == ["declined"]
        assert e2e.api.received == []
        assert "declined" in told["content"]
    check_log(e2e, conversation["id"], pending + answered)


async def test_declined_confirmation_fetches_no_token(e2e: E2E, tmp_path: Path) -> None:
    # A gateway with no OAuth token cached: the confirmation's preview must not fetch one.
    gateway = e2e.own_gateway(tmp_path)
    arguments = {"order_number": "A-10023", "reason": "damaged"}
    e2e.script(
        [
            {"tool_calls": [call("submit_refund", arguments, id="call_confirm")]},
            {"content": "OK, I did not refund it."},
        ]
    )
    conversation = new_conversation(lead={"email": JANE})
    messages: list[ChatCompletionMessageParam] = [user("Refund A-10023, it arrived damaged.")]
    try:
        async with e2e.async_client(gateway) as client:
            first = await client.chat.completions.create(
                model="support", messages=messages, extra_body={"conversation": conversation}
            )
            messages += [
                said(first),
                answer("call_confirm", {"confirmed": False}),
            ]
            await client.chat.completions.create(
                model="support", messages=messages, extra_body={"conversation": conversation}
            )
    finally:
        gateway.stop()
    assert e2e.api.paths() == []


# --- 7. a missing variable ------------------------------------------------------------------


def test_missing_variable_is_refused_without_a_request(e2e: E2E) -> None:
    conversation = new_conversation()
    e2e.script(
        [
            {"tool_calls": [call("get_customer_account", id="call_lookup")]},
            {"content": "Could you tell me your email address?"},
        ]
    )
    with e2e.client() as client:
        completion = client.chat.completions.create(
            model="support",
            messages=[user("Which plan am I on?")],
            extra_body={"conversation": conversation},
        )
    assert completion.choices[0].message.content == "Could you tell me your email address?"
    assert e2e.api.received == []
    told = e2e.upstream.requests[1]["messages"][-1]
    assert told["role"] == "tool" and told["tool_call_id"] == "call_lookup"
    assert "lead.email" in told["content"]
    ext = extension(completion)
    assert [(e["outcome"], e["status_code"]) for e in ext["executions"]] == [("rejected", None)]
    check_log(e2e, conversation["id"], ext["executions"])


# --- 8. upstream failures -------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_upstream_500_is_502(e2e: E2E, stream: bool) -> None:
    conversation = new_conversation()
    e2e.script([{"error": {"status": 500, "message": "the model is on fire"}}])
    with e2e.client() as client, pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(
            model="support",
            messages=[user("Hello")],
            stream=stream,
            extra_body={"conversation": conversation},
        )
    error = caught.value
    assert isinstance(error, openai.APIStatusError) and error.status_code == 502
    assert "the model is on fire" in error.message
    assert error.type == "upstream_error"
    assert e2e.credentials.upstream_key not in error.response.text
    check_log(e2e, conversation["id"], [])


def test_upstream_4xx_keeps_its_status(e2e: E2E) -> None:
    e2e.script([{"error": {"status": 429, "message": "slow down", "type": "rate_limit"}}])
    with e2e.client() as client, pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="support", messages=[user("Hello")])
    assert caught.value.status_code == 429 and "slow down" in caught.value.message


async def test_unreachable_upstream_is_502(e2e: E2E) -> None:
    conversation = new_conversation()
    async with e2e.async_client() as client:
        with pytest.raises(openai.InternalServerError) as caught:
            await client.chat.completions.create(
                model="offline",
                messages=[user("Hello")],
                extra_body={"conversation": conversation},
            )
    assert caught.value.status_code == 502
    assert caught.value.code == "upstream_unreachable"
    assert e2e.upstream.requests == []
    check_log(e2e, conversation["id"], [])


# --- 9. streaming ---------------------------------------------------------------------------


async def test_stream_runs_a_tool_round_inside_one_stream(e2e: E2E) -> None:
    conversation = new_conversation(lead={"email": JANE})
    answer = "Your order A-10023 has shipped and arrives on June 14."
    e2e.script(
        [
            {"tool_calls": [call("look_up_order", {"order_number": "A-10023"}, id="call_s")]},
            {"content": answer},
        ]
    )
    async with e2e.async_client() as client:
        stream = await client.chat.completions.create(
            model="support",
            messages=[user("Where is my order A-10023?")],
            stream=True,
            extra_body={"conversation": conversation},
        )
        chunks = [chunk async for chunk in stream]
    pieces = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert len(pieces) >= 5 and "".join(pieces) == answer
    assert len({c.id for c in chunks}) == 1
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert [c for c in chunks[:-1] if "actiongate" in (c.model_extra or {})] == []
    ext = extension(chunks[-1])
    assert ext["conversation_id"] == conversation["id"]
    assert [(e["action"], e["status_code"]) for e in ext["executions"]] == [("look_up_order", 200)]
    assert [m["role"] for m in ext["messages"]] == ["assistant", "tool"]
    assert e2e.api.paths() == ["GET /crm/orders/A-10023"]
    assert len(e2e.upstream.requests) == 2 and all(r["stream"] for r in e2e.upstream.requests)
    check_log(e2e, conversation["id"], ext["executions"])


def test_stream_content_is_not_buffered(e2e: E2E) -> None:
    delay = 0.25
    e2e.script([{"content": "One moment, checking that.", "chunk_delay_s": delay}])
    arrivals: list[tuple[float, str]] = []
    with e2e.client() as client:
        started = time.monotonic()
        stream = client.chat.completions.create(model="support", messages=[user("Hi")], stream=True)
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                arrivals.append((time.monotonic(), chunk.choices[0].delta.content))
        ended = time.monotonic()
    assert "".join(text for _, text in arrivals) == "One moment, checking that."
    first = arrivals[0][0]
    # The upstream spends 5 x 0.25 s on this reply; a buffering gateway delivers it all at once.
    assert ended - started >= 5 * delay
    assert ended - first >= 3 * delay, (first - started, ended - started)
    assert arrivals[-1][0] - first >= 2 * delay


def test_form_answered_right_after_its_stream_is_recognised(e2e: E2E) -> None:
    """A widget answers a streamed form as soon as it has read ``[DONE]``.

    A slow database write (here: the test holds SQLite's write lock) must not make the gateway
    forget the form it just asked for: the state must be saved before the stream's last event,
    not after it. The lock is let go once the answer has reached the upstream (a gateway saving
    too late has not stored the form by then), or after a bounded wait (a gateway saving in
    time waits for the lock before its last event).
    """
    conversation = new_conversation()
    e2e.script(
        [{"tool_calls": [call("return_request", {"order_number": "A-10023"}, id="call_form")]}]
    )
    messages: list[ChatCompletionMessageParam] = [user("I want to return order A-10023.")]
    lock = sqlite3.connect(e2e.gateway.db_path, isolation_level=None, check_same_thread=False)
    lock.execute("BEGIN IMMEDIATE")
    released = threading.Event()

    def release_when_answered() -> None:
        deadline = time.monotonic() + 1.0
        while len(e2e.upstream.requests) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        lock.execute("ROLLBACK")
        lock.close()
        released.set()

    releaser = threading.Thread(target=release_when_answered, daemon=True)
    releaser.start()
    try:
        with e2e.client() as client:
            stream = client.chat.completions.create(
                model="support",
                messages=messages,
                stream=True,
                extra_body={"conversation": conversation},
            )
            chunks = list(stream)  # the sync SDK closes the response at [DONE]
            assert chunks[-1].choices[0].finish_reason == "tool_calls"
            assert extension(chunks[-1])["ui"][0]["tool_call_id"] == "call_form"
            values = {"email": JANE, "order_number": "A-10023", "reason": "Damaged"}
            messages += [
                *extension(chunks[-1])["messages"],  # the assistant's call, as history
                answer("call_form", values),
            ]
            e2e.script([{"content": "Your return label is on its way."}])
            answered = client.chat.completions.create(
                model="support", messages=messages, extra_body={"conversation": conversation}
            )
    finally:
        releaser.join(5)
        assert released.is_set()
    told = e2e.upstream.requests[-1]["messages"][-1]
    assert "submitted the form" in told["content"]
    assert e2e.api.paths() == ["POST /crm/returns"]
    check_log(e2e, conversation["id"], extension(answered)["executions"])


# --- the rest of the OpenAI surface ---------------------------------------------------------


def test_models_and_client_keys(e2e: E2E) -> None:
    with e2e.client() as client:
        assert sorted(m.id for m in client.models.list()) == ["offline", "support"]
    with e2e.client(api_key="not-a-key") as client:
        assert list(client.models.list()) == []
        with pytest.raises(openai.AuthenticationError) as caught:
            client.chat.completions.create(model="support", messages=[user("Hi")])
    assert caught.value.status_code == 401
    with e2e.client() as client, pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-agent", messages=[user("Hi")])
    assert e2e.upstream.requests == []


# --- shutdown -------------------------------------------------------------------------------


def test_sigterm_stops_cleanly_keeping_every_record(e2e: E2E, tmp_path: Path) -> None:
    gateway = e2e.own_gateway(tmp_path)
    conversation = new_conversation(lead={"email": JANE})
    e2e.script(
        [
            {"tool_calls": [call("get_customer_account")]},
            {"content": "You are on the Pro plan."},
        ]
    )
    try:
        with e2e.client(gateway) as client:
            client.chat.completions.create(
                model="support",
                messages=[user("My plan?")],
                extra_body={"conversation": conversation},
            )
    finally:
        status = gateway.stop()  # at once: the log writer may still hold the records
    assert status == 0, gateway.logs_text()
    [record] = gateway.records(conversation["id"])
    assert record["outcome"] == "success" and record["injected"] is True
    stored = gateway.database_bytes()
    assert all(secret.encode() not in stored for secret in e2e.credentials.all())


# --- the Anthropic Messages front, with the official anthropic SDK ---------------------------


def test_anthropic_sdk_messages_create_runs_an_action(e2e: E2E) -> None:
    import anthropic

    conversation = new_conversation(lead={"email": JANE})
    e2e.script(
        [
            {"tool_calls": [call("get_customer_account", id="toolu_lookup")]},
            {"content": "You are on the Pro plan."},
        ]
    )
    base_url = e2e.gateway.base_url.removesuffix("/v1")
    key = e2e.credentials.client_key
    with anthropic.Anthropic(base_url=base_url, api_key=key, max_retries=0, timeout=20) as client:
        raw = client.messages.with_raw_response.create(
            model="support",
            max_tokens=200,
            messages=[{"role": "user", "content": "Which plan am I on?"}],
            extra_body={"conversation": conversation},
        )
        message = raw.parse()
        with client.messages.stream(
            model="support",
            max_tokens=200,
            messages=[{"role": "user", "content": "Thanks!"}],
            extra_body={"conversation": conversation},
        ) as stream:
            streamed = stream.get_final_message()
        # A client tool: tool_use out, tool_result back in, in the same conversation.
        weather = {
            "name": "get_weather",
            "description": "The weather in a city.",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
        e2e.script(
            [
                {"tool_calls": [call("get_weather", {"city": "Oslo"}, id="toolu_w")]},
                {"content": "Sunny in Oslo."},
            ]
        )
        ask = [{"role": "user", "content": "Weather in Oslo?"}]
        asked = client.messages.create(
            model="support",
            max_tokens=200,
            messages=ask,  # type: ignore[arg-type]
            tools=[weather],  # type: ignore[list-item]
            extra_body={"conversation": conversation},
        )
        [use] = [b for b in asked.content if b.type == "tool_use"]
        result = {"type": "tool_result", "tool_use_id": use.id, "content": "sunny"}
        told = client.messages.create(
            model="support",
            max_tokens=200,
            messages=[
                *ask,
                {"role": "assistant", "content": [b.model_dump() for b in asked.content]},
                {"role": "user", "content": [result]},
            ],  # type: ignore[list-item]
            tools=[weather],  # type: ignore[list-item]
            extra_body={"conversation": conversation},
        )
    assert asked.stop_reason == "tool_use" and use.name == "get_weather"
    assert use.input == {"city": "Oslo"}
    assert told.content[0].type == "text" and told.content[0].text == "Sunny in Oslo."
    assert e2e.tool_messages()[-1] == {
        "role": "tool",
        "tool_call_id": "toolu_w",
        "content": "sunny",
    }
    assert (
        message.content[0].type == "text" and message.content[0].text == "You are on the Pro plan."
    )
    assert message.stop_reason == "end_turn"
    assert raw.headers["x-actiongate-conversation-id"] == conversation["id"]
    [got] = e2e.api.received
    assert got.raw_path == "/crm/customers?email=jane%40example.com"
    assert streamed.content[0].type == "text" and streamed.content[0].text
    assert streamed.usage.output_tokens > 0
    executions = (message.model_extra or {})["actiongate"]["executions"]
    check_log(e2e, conversation["id"], executions)


# --- the Responses front, with the official openai SDK ---------------------------------------


def test_openai_sdk_responses_create_stream_and_continue(e2e: E2E) -> None:
    conversation = new_conversation(lead={"email": JANE})
    weather = {
        "type": "function",
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
    e2e.script(
        [
            {"tool_calls": [call("get_customer_account", id="call_acct")]},
            {"content": "You are on the Pro plan."},
            {"tool_calls": [call("get_weather", {"city": "Oslo"}, id="call_w")]},
            {"content": "Sunny in Oslo, and you are still on Pro."},
        ]
    )
    with e2e.client() as client:
        raw = client.responses.with_raw_response.create(
            model="support",
            input="Which plan am I on?",
            extra_body={"conversation": conversation},
        )
        first = raw.parse()
        with client.responses.stream(
            model="support",
            input="And the weather in Oslo?",
            tools=[weather],  # type: ignore[list-item]
            previous_response_id=first.id,
        ) as stream:
            asked = stream.get_final_response()
        [fc] = asked.output
        assert fc.type == "function_call" and fc.call_id == "call_w"
        last = client.responses.create(
            model="support",
            previous_response_id=asked.id,
            input=[{"type": "function_call_output", "call_id": "call_w", "output": "sunny"}],
            tools=[weather],  # type: ignore[list-item]
        )
    assert first.output_text == "You are on the Pro plan."
    assert raw.headers["x-actiongate-conversation-id"] == conversation["id"]
    assert raw.headers["x-actiongate-executions"] == "get_customer_account=success"
    assert last.output_text == "Sunny in Oslo, and you are still on Pro."
    [got] = e2e.api.received
    assert got.raw_path == "/crm/customers?email=jane%40example.com"
    history = e2e.upstream.requests[-1]["messages"]
    roles = [m["role"] for m in history]
    assert roles == [
        "system",
        "user",
        "assistant",
        "tool",
        "assistant",
        "user",
        "assistant",
        "tool",
    ]
    executions = (first.model_extra or {})["actiongate"]["executions"]
    check_log(e2e, conversation["id"], executions)


# --- frameworks that run tools themselves, unchanged -------------------------------------------


async def test_pydantic_ai_chat_model_goes_on_when_it_cannot_show_a_form(e2e: E2E) -> None:
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    conversation = new_conversation(lead={"email": JANE})
    e2e.script(
        [
            {"tool_calls": [call("look_up_order", {"order_number": "A-10023"}, id="call_o")]},
            {"tool_calls": [call("return_request", {"order_number": "A-10023"}, id="call_f")]},
            {"content": "Your order was delivered; tell me the reason and I'll start the return."},
        ]
    )
    async with e2e.async_client() as client:
        agent = Agent(OpenAIChatModel("support", provider=OpenAIProvider(openai_client=client)))
        result = await agent.run(
            "I want to return order A-10023.",
            model_settings={"extra_body": {"conversation": conversation}},  # a setting, not code
        )
    assert result.output.startswith("Your order was delivered")
    assert [r.path for r in e2e.api.received] == ["/crm/orders/A-10023"]  # the form sent nothing
    told = e2e.tool_messages()[-1]
    assert told["tool_call_id"] == "call_f" and "could not be shown" in told["content"]
    records = e2e.gateway.records(conversation["id"])
    assert [(r["action"], r["outcome"], r["injected"]) for r in records] == [
        ("look_up_order", "success", True)
    ]


async def test_openai_agents_chat_model_collects_a_form_in_text(e2e: E2E) -> None:
    from agents import Agent, OpenAIChatCompletionsModel, Runner, set_tracing_disabled

    set_tracing_disabled(True)
    conversation = new_conversation()
    answers = {"email": JANE, "order_number": "A-10023", "reason": "Damaged"}
    e2e.script(
        [
            {"tool_calls": [call("return_request", answers, id="call_t")]},
            {"content": "Your return is started."},
        ]
    )
    headers = {"X-Actiongate-UI": "text", "X-Conversation-Id": conversation["id"]}
    async with e2e.async_client(default_headers=headers) as client:
        agent = Agent(
            name="support",
            instructions="Help the customer.",
            model=OpenAIChatCompletionsModel(model="support", openai_client=client),
        )
        result = await Runner.run(agent, "I want to return order A-10023, it arrived damaged.")
    assert result.final_output == "Your return is started."
    [got] = e2e.api.received
    assert got.method == "POST" and got.path == "/crm/returns"
    assert json.loads(got.body)["email"] == JANE and json.loads(got.body)["reason"] == "Damaged"
    offered = {t["function"]["name"]: t for t in e2e.upstream.requests[0]["tools"]}
    assert offered["return_request"]["function"]["parameters"]["required"] == [
        "email",
        "order_number",
        "reason",
    ]
    [record] = e2e.gateway.records(conversation["id"])
    assert record["action"] == "return_request" and record["outcome"] == "success"


async def test_pydantic_ai_responses_model_goes_on_when_it_cannot_show_a_form(e2e: E2E) -> None:
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIResponsesModel
    from pydantic_ai.providers.openai import OpenAIProvider

    conversation = new_conversation(lead={"email": JANE})
    e2e.script(
        [
            {"tool_calls": [call("look_up_order", {"order_number": "A-10023"}, id="call_o")]},
            {"tool_calls": [call("return_request", {"order_number": "A-10023"}, id="call_f")]},
            {"content": "Your order was delivered; tell me the reason and I'll start the return."},
        ]
    )
    async with e2e.async_client() as client:
        model = OpenAIResponsesModel("support", provider=OpenAIProvider(openai_client=client))
        result = await Agent(model).run(
            "I want to return order A-10023.",
            model_settings={"extra_body": {"conversation": conversation}},
        )
    assert result.output.startswith("Your order was delivered")
    assert [r.path for r in e2e.api.received] == ["/crm/orders/A-10023"]  # the form sent nothing
    told = e2e.tool_messages()[-1]
    assert told["tool_call_id"] == "call_f" and "could not be shown" in told["content"]
    records = e2e.gateway.records(conversation["id"])
    assert [(r["action"], r["outcome"], r["injected"]) for r in records] == [
        ("look_up_order", "success", True)
    ]


async def test_openai_agents_default_responses_model_runs_actions_and_forms_in_text(
    e2e: E2E,
) -> None:
    from agents import Agent, Runner, set_default_openai_client, set_tracing_disabled

    set_tracing_disabled(True)
    conversation = new_conversation()
    answers = {"email": JANE, "order_number": "A-10023", "reason": "Damaged"}
    e2e.script(
        [
            {"tool_calls": [call("return_request", answers, id="call_t")]},
            # The form captured lead.email (maps_to), which the order lookup needs.
            {"tool_calls": [call("look_up_order", {"order_number": "A-10023"}, id="call_l")]},
            {"content": "Your return is started."},
        ]
    )
    headers = {"X-Actiongate-UI": "text", "X-Conversation-Id": conversation["id"]}
    async with e2e.async_client(default_headers=headers) as client:
        set_default_openai_client(client, use_for_tracing=False)
        try:
            agent = Agent(name="support", instructions="Help the customer.", model="support")
            result = await Runner.run(agent, "Return order A-10023 please, it arrived damaged.")
        finally:
            set_default_openai_client(AsyncOpenAI(api_key="unused"), use_for_tracing=False)
    assert result.final_output == "Your return is started."
    assert [(r.method, r.path) for r in e2e.api.received] == [
        ("POST", "/crm/returns"),
        ("GET", "/crm/orders/A-10023"),
    ]
    records = e2e.gateway.records(conversation["id"])
    assert sorted((r["action"], r["outcome"]) for r in records) == [
        ("look_up_order", "success"),
        ("return_request", "success"),
    ]
