"""MCP elicitation, driven by the official ``mcp`` client with an ``elicitation_callback``.

The same scripted conversation runs over stdio (a real ``actiongate mcp`` process) and over
streamable HTTP, in both protocol eras: handshake-era clients (``mode="legacy"``) are asked on
the call's own channel, 2026-07-28 clients by ``InputRequiredResult`` and a retried call. Each
step checks what the local action API received and, at the end, the execution log. Clients
without elicitation keep the old behaviour (``tests/test_mcp.py``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, StdioServerParameters
from mcp.client.session import ClientRequestContext
from mcp.client.stdio import stdio_client
from mcp_types import ElicitRequestFormParams, ElicitRequestParams, ElicitResult
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

import tests.test_mcp
from gateway.stores.logs import ExecutionRecord
from tests.support.action_api import ActionAPI, running_api
from tests.test_mcp import (
    ACTIONGATE,
    ROOT,
    logged,
    mcp_client,
    serving,
    stored_records,
    text,
    write_config,
)

CALL_BACK = {
    "name": "Call back",
    "url": "{base}/echo/callbacks?phone={{{{lead.phone}}}}",
}


class Script:
    """The user: answers each elicitation with the next scripted answer, keeping the questions."""

    def __init__(self) -> None:
        self.answers: list[ElicitResult] = []
        self.asked: list[ElicitRequestFormParams] = []

    def will(self, action: str, **content: Any) -> None:
        self.answers.append(ElicitResult(action=action, content=content or None))  # type: ignore[arg-type]

    async def __call__(
        self, _ctx: ClientRequestContext, params: ElicitRequestParams
    ) -> ElicitResult:
        assert isinstance(params, ElicitRequestFormParams)
        self.asked.append(params)
        assert self.answers, f"unexpected question: {params.message}"
        return self.answers.pop(0)


def with_call_back(config_path: Path, api: ActionAPI) -> None:
    config = json.loads(config_path.read_text())
    action = {k: v.format(base=api.base_url) for k, v in CALL_BACK.items()}
    config["actions"].append(action)
    config_path.write_text(json.dumps(config))


async def converse(client: Client, api: ActionAPI, user: Script, *, remembers: bool) -> None:
    """Every transport answers this conversation the same way (see :func:`check_records`)."""
    # 0. An answer that is not an email: an error naming the field, nothing sent.
    user.will("accept", email="not-an-email")
    bad_email = await client.call_tool("get_customer_account", {})
    assert bad_email.is_error
    assert "'email'" in text(bad_email) and "not a valid email address" in text(bad_email)
    assert api.received == []

    # 1. A missing lead.email is asked for, with an email-formatted field; the call then runs.
    user.will("accept", email="ana@example.com")
    found = await client.call_tool("get_customer_account", {})
    assert not found.is_error, text(found)
    question = user.asked[-1]
    assert "Get Customer Account" in question.message and "email" in question.message
    schema = question.requested_schema
    assert schema["properties"]["email"] == {"type": "string", "title": "email", "format": "email"}
    assert schema["required"] == ["email"]
    assert api.last().path == "/echo/customers"
    assert api.last().query_string == "email=ana@example.com"

    # 2. The lead is kept for the conversation: asked again only where each call is its own.
    asked = len(user.asked)
    if not remembers:
        user.will("accept", email="ana@example.com")
    again = await client.call_tool("get_customer_account", {})
    assert not again.is_error
    assert len(user.asked) == asked + (0 if remembers else 1)

    # 3. Declined: nothing is sent and the model is told why.
    sent = len(api.received)
    user.will("decline")
    declined = await client.call_tool("call_back", {})
    assert declined.is_error
    assert "declined to give their phone" in text(declined)
    assert "nothing was sent" in text(declined)
    assert len(api.received) == sent

    # 4. A write action asks for consent.
    await write_consent(client, api, user, remembers=remembers)

    # 5. A form: listed, asked with the model's prefill, validated as the chat validates.
    sent = len(api.received)
    user.will("accept", email="nope", order_number="A-12345")
    bad = await client.call_tool("return_request", {"order_number": "A-12345"})
    assert bad.is_error
    assert "'email'" in text(bad) and "not a valid email address" in text(bad)
    assert len(api.received) == sent
    form = user.asked[-1]
    assert "Start a return" in form.message
    fields = form.requested_schema["properties"]
    assert fields["order_number"]["default"] == "A-12345"
    assert fields["order_number"]["pattern"] == "[A-Z]-[0-9]{5}"
    assert fields["email"]["format"] == "email"
    assert form.requested_schema["required"] == ["email", "order_number"]

    user.will("accept", email="bo@example.com", order_number="B-54321")
    returned = await client.call_tool("return_request", {})
    assert not returned.is_error, text(returned)
    assert "submitted the form" in text(returned)
    assert api.last().path == "/echo/returns"
    assert json.loads(api.last().body) == {"email": "bo@example.com", "order": "B-54321"}

    user.will("cancel")
    cancelled = await client.call_tool("return_request", {})
    assert cancelled.is_error and "declined to fill in the form" in text(cancelled)
    assert len(api.received) == sent + 1
    assert not user.answers


async def write_consent(client: Client, api: ActionAPI, user: Script, *, remembers: bool) -> None:
    """A write action asks for consent, showing what it sends; declined, nothing is sent."""
    sent = len(api.received)
    user.will("decline")
    no = await client.call_tool("submit_refund", {"order_number": "A-7"})
    assert no.is_error and "declined to allow it" in text(no)
    assert len(api.received) == sent
    consent = user.asked[-1]
    assert consent.requested_schema["properties"]["confirm"]["type"] == "boolean"
    assert "POST" in consent.message and "/echo/refunds" in consent.message
    assert '"order":"A-7"' in consent.message.replace(" ", "")

    user.will("accept", confirm=True)
    yes = await client.call_tool("submit_refund", {"order_number": "A-7"})
    assert not yes.is_error, text(yes)
    assert api.last().method == "POST"
    # The body's lead.email is optional: sent when the conversation knows it.
    lead = {"email": "ana@example.com"} if remembers else {}
    assert json.loads(api.last().body) == {"order": "A-7", **lead}
    assert len(api.received) == sent + 1


def check_records(records: list[ExecutionRecord]) -> None:
    expected = [
        ("get_customer_account", "rejected"),
        ("get_customer_account", "success"),
        ("get_customer_account", "success"),
        ("call_back", "declined"),
        ("submit_refund", "declined"),
        ("submit_refund", "success"),
        ("return_request", "rejected"),
        ("return_request", "success"),
        ("return_request", "declined"),
    ]
    assert [(r.action, r.outcome) for r in records] == expected
    assert all(r.injected and r.agent_id == "support" for r in records)
    assert "/echo/customers?email=" in records[1].request["url"], records[1].request
    declined = records[3]
    assert declined.error is not None and "phone" in declined.error
    assert declined.response is None


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_stdio_elicits_values_consent_and_forms(tmp_path: Path, mode: str) -> None:
    user = Script()
    async with running_api() as api:
        config_path = write_config(tmp_path, api)
        with_call_back(config_path, api)
        params = StdioServerParameters(
            command=ACTIONGATE,
            args=["mcp", str(config_path), "--agent", "support"],
            cwd=ROOT,
            env=dict(os.environ),
        )
        with (tmp_path / "stderr.txt").open("w") as errlog:
            transport = stdio_client(params, errlog=errlog)
            async with Client(transport, mode=mode, elicitation_callback=user) as client:
                modern = client.protocol_version in MODERN_PROTOCOL_VERSIONS
                assert modern == (mode == "auto")
                await converse(client, api, user, remembers=True)
        records = await stored_records(f"sqlite:///{tmp_path / 'mcp.db'}")
    check_records(records)


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_http_elicits_values_consent_and_forms(
    tmp_path: Path, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def write(tmp: Path, api_: ActionAPI) -> Path:
        path = write_config(tmp, api_)
        with_call_back(path, api_)
        return path

    monkeypatch.setattr(tests.test_mcp, "write_config", write)  # what serving() writes
    user = Script()
    async with running_api() as api, serving(tmp_path, api) as (url, services):
        async with mcp_client(f"{url}/mcp/support", mode=mode, elicitation_callback=user) as client:
            # A 2026-07-28 request is a conversation of its own: nothing is remembered.
            await converse(client, api, user, remembers=mode == "legacy")
        records = await logged(services)
    check_records(records)
