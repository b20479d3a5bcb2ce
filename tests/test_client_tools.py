"""Clients that run tools themselves or show no widgets (issue 14, "clients that run their own
tools"), and the small API surface they rely on: ``GET /v1/models/{id}`` and the conversation id
as a header."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from tests.support.gateway import Gateway, running_gateway

USER = [{"role": "user", "content": "I want to return something"}]
PYDANTIC_AI_ANSWER = (
    "Unknown tool name: 'return_request'. Available tools: 'final_result'. "
    "Fix the errors and try again."
)


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Gateway]:
    async with running_gateway(
        tmp_path,
        more_agents=[
            {"id": "texty", "ui": "text", "actions": ["return_request"]},
            {"id": "locked", "api_keys": ["sk-locked-key-1"]},
        ],
    ) as gateway:
        yield gateway


def call(name: str, arguments: dict[str, Any], id: str) -> dict[str, Any]:
    return {"name": name, "arguments": arguments, "id": id}


async def _ui_call(gw: Gateway, tool: str, args: dict[str, Any], conv: str) -> list[Any]:
    """Have the model call an interactive tool; the history the client then holds."""
    gw.upstream.script([{"tool_calls": [call(tool, args, f"call_{tool}")]}])
    first = (await gw.chat(messages=USER, conversation={"id": conv})).json()
    assert first["choices"][0]["finish_reason"] == "tool_calls"
    assert first["actiongate"]["ui"][0]["action"] == tool
    return [*USER, first["choices"][0]["message"]]


async def _answer(gw: Gateway, history: list[Any], tool: str, content: str, conv: str) -> Any:
    gw.upstream.script([{"content": "Let's do it here in the chat then."}])
    answer = {"role": "tool", "tool_call_id": f"call_{tool}", "content": content}
    r = await gw.chat(messages=[*history, answer], conversation={"id": conv})
    assert r.status_code == 200, r.text
    told = gw.upstream.requests[-1]["messages"][-1]
    assert told["role"] == "tool" and told["tool_call_id"] == f"call_{tool}"
    return told["content"]


@pytest.mark.parametrize(
    "content", [PYDANTIC_AI_ANSWER, json.dumps({"error": "cannot render"}), "", "[1, 2]"]
)
async def test_a_form_answered_with_something_else_was_not_shown(gw: Gateway, content: str) -> None:
    history = await _ui_call(gw, "return_request", {"order_number": "A-12345"}, "c-ns")
    told = await _answer(gw, history, "return_request", content, "c-ns")
    assert "could not be shown" in told and "Start a return" in told
    assert gw.api.received == []


async def test_a_form_answer_with_a_bad_field_is_still_a_422(gw: Gateway) -> None:
    history = await _ui_call(gw, "return_request", {}, "c-422")
    bad = {"role": "tool", "tool_call_id": "call_return_request", "content": '{"email": "x"}'}
    r = await gw.chat(messages=[*history, bad], conversation={"id": "c-422"})
    assert r.status_code == 422 and r.json()["error"]["param"] == "email"


async def test_a_button_or_confirmation_answered_with_an_error_text_was_not_shown(
    gw: Gateway,
) -> None:
    history = await _ui_call(gw, "start_refund", {}, "c-btn")
    told = await _answer(gw, history, "start_refund", PYDANTIC_AI_ANSWER, "c-btn")
    assert "could not be shown" in told and "Start refund" in told
    history = await _ui_call(gw, "submit_refund", {"order_number": "A-1"}, "c-conf")
    told = await _answer(gw, history, "submit_refund", PYDANTIC_AI_ANSWER, "c-conf")
    assert "could not be shown" in told
    assert gw.api.received == []  # neither the click's request nor the refund was sent
    [record] = await gw.records(action="submit_refund", outcome="declined")
    assert "could not be shown" in (record.error or "")


async def test_text_mode_collects_a_form_in_conversation(gw: Gateway) -> None:
    headers = {"x-actiongate-ui": "text"}
    gw.upstream.script(
        [
            {
                "tool_calls": [
                    call("return_request", {"email": "nope", "order_number": "A-1"}, "f1")
                ]
            },
            {"content": "That email looks wrong, what is it?"},
        ]
    )
    r = await gw.client.post(
        "/v1/chat/completions",
        json={"model": "support", "messages": USER, "conversation": {"id": "c-text"}},
        headers=headers,
    )
    assert r.status_code == 200 and r.json()["actiongate"]["ui"] == []
    sent = gw.upstream.requests[0]
    form_tool = next(t for t in sent["tools"] if t["function"]["name"] == "return_request")
    params = form_tool["function"]["parameters"]
    assert params["required"] == ["email", "order_number"]
    assert params["properties"]["email"] == {"type": "string", "format": "email"}
    assert params["properties"]["order_number"]["pattern"] == "[A-Z]-[0-9]{5}"
    told = gw.upstream.requests[1]["messages"][-1]["content"]
    assert "not submitted" in told and "email" in told
    assert gw.api.received == []

    gw.upstream.script(
        [
            {
                "tool_calls": [
                    call(
                        "return_request",
                        {"email": "jo@example.com", "order_number": "A-12345"},
                        "f2",
                    )
                ]
            },
            {"content": "Your return is started."},
        ]
    )
    r = await gw.client.post(
        "/v1/chat/completions",
        json={"model": "support", "messages": USER, "conversation": {"id": "c-text"}},
        headers=headers,
    )
    assert r.json()["choices"][0]["message"]["content"] == "Your return is started."
    assert json.loads(gw.api.last().body) == {"email": "jo@example.com", "order": "A-12345"}
    told = gw.upstream.requests[-1]["messages"][-1]["content"]
    assert "submitted the form" in told
    [record] = await gw.records(action="return_request")
    assert record.outcome == "success" and record.injected
    # maps_to captured the email: the lookup that needs lead.email now runs.
    gw.upstream.script(
        [{"tool_calls": [call("get_customer_account", {}, "g1")]}, {"content": "Found you."}]
    )
    r = await gw.client.post(
        "/v1/chat/completions",
        json={"model": "support", "messages": USER, "conversation": {"id": "c-text"}},
        headers=headers,
    )
    assert gw.api.last().raw_path == "/echo/customers?email=jo%40example.com"


async def test_text_mode_runs_a_write_only_after_the_customers_yes(gw: Gateway) -> None:
    headers = {"x-actiongate-ui": "text"}
    body = {
        "model": "support",
        "messages": USER,
        "conversation": {"id": "c-w", "lead": {"email": "a@b.co"}},
    }
    gw.upstream.script(
        [
            {"tool_calls": [call("submit_refund", {"order_number": "A-7"}, "w1")]},
            {"content": "Shall I submit the refund for A-7?"},
        ]
    )
    r = await gw.client.post("/v1/chat/completions", json=body, headers=headers)
    assert r.status_code == 200 and r.json()["actiongate"]["ui"] == []
    tool = next(
        t for t in gw.upstream.requests[0]["tools"] if t["function"]["name"] == "submit_refund"
    )
    assert "customer_confirmed" in tool["function"]["parameters"]["required"]
    told = gw.upstream.requests[1]["messages"][-1]["content"]
    assert "Not run yet" in told and "/echo/refunds" in told
    assert gw.api.received == []  # asked, not sent

    gw.upstream.script(
        [
            {
                "tool_calls": [
                    call("submit_refund", {"order_number": "A-7", "customer_confirmed": True}, "w2")
                ]
            },
            {"content": "Done."},
        ]
    )
    r = await gw.client.post("/v1/chat/completions", json=body, headers=headers)
    assert r.status_code == 200
    assert json.loads(gw.api.last().body) == {"order": "A-7", "email": "a@b.co"}  # no flag sent
    [record] = await gw.records(action="submit_refund")
    assert record.outcome == "success"


async def test_text_mode_offers_buttons_in_text(gw: Gateway) -> None:
    headers = {"x-actiongate-ui": "text"}
    body = {"model": "support", "messages": USER, "conversation": {"lead": {"email": "a@b.co"}}}
    gw.upstream.script(
        [
            {"tool_calls": [call("book_a_demo", {}, "b1"), call("start_refund", {}, "b2")]},
            {"content": "Here is the link; shall I start the refund?"},
        ]
    )
    r = await gw.client.post("/v1/chat/completions", json=body, headers=headers)
    assert r.status_code == 200
    told = {
        m["tool_call_id"]: m["content"]
        for m in gw.upstream.requests[1]["messages"]
        if m["role"] == "tool"
    }
    assert "https://example.com/demo?email=a%40b.co" in told["b1"]
    assert "Not run" in told["b2"] and "customer_said_yes" in told["b2"]
    assert gw.api.received == []


async def test_the_agent_can_be_text_only_and_the_header_is_checked(gw: Gateway) -> None:
    gw.upstream.script(
        [{"tool_calls": [call("return_request", {"email": "x"}, "t1")]}, {"content": "ok"}]
    )
    r = await gw.chat(model="texty", messages=USER)
    assert r.status_code == 200 and r.json()["actiongate"]["ui"] == []
    bad = await gw.client.post(
        "/v1/chat/completions",
        json={"model": "support", "messages": USER},
        headers={"x-actiongate-ui": "pictures"},
    )
    assert bad.status_code == 400 and "X-Actiongate-UI" in bad.json()["error"]["message"]
    # A widget client on a text agent asks for widgets explicitly.
    gw.upstream.script([{"tool_calls": [call("return_request", {}, "t2")]}])
    widgets = await gw.client.post(
        "/v1/chat/completions",
        json={"model": "texty", "messages": USER},
        headers={"x-actiongate-ui": "widgets"},
    )
    assert widgets.json()["actiongate"]["ui"][0]["kind"] == "form"


async def test_retrieve_model_answers_for_agents_this_key_may_use(gw: Gateway) -> None:
    ok = await gw.client.get("/v1/models/support")
    assert ok.status_code == 200
    assert ok.json() == {"id": "support", "object": "model", "created": 0, "owned_by": "actiongate"}
    for path, key in (
        ("/v1/models/nope", None),
        ("/v1/models/locked", None),
        ("/v1/models/locked", "wrong"),
    ):
        headers = {"authorization": f"Bearer {key}"} if key else {}
        r = await gw.client.get(path, headers=headers)
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    keyed = await gw.client.get(
        "/v1/models/locked", headers={"authorization": "Bearer sk-locked-key-1"}
    )
    assert keyed.status_code == 200 and keyed.json()["id"] == "locked"


@pytest.mark.parametrize(
    "conversation",
    ["conv-plain_1", "a b~!", "conv-\u2067evil\u2069", "50%-off", "a\r\nb", "t\tab", "del\x7f"],
)
async def test_the_conversation_id_header_survives_any_id(gw: Gateway, conversation: str) -> None:
    gw.upstream.script([{"content": "hi"}])
    r = await gw.chat(messages=USER, conversation={"id": conversation})
    if r.status_code != 200:  # an id the gateway refuses is refused in the body, not the header
        assert r.status_code == 400
        return
    header = r.headers["x-actiongate-conversation-id"]
    assert header.isascii() and "\r" not in header and "\n" not in header
    assert unquote(header) == r.json()["actiongate"]["conversation_id"] == conversation
    plain = all(" " <= c <= "~" for c in conversation) and "%" not in conversation
    assert (header == conversation) is plain  # printable ASCII goes as it is, the rest encoded
