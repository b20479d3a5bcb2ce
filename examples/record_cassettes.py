"""Record the example cassettes (``examples/cassettes/``) by running real conversations.

    python -m examples.record_cassettes [--out examples/cassettes] [--any-ports]

Starts the sample customer API and the scripted model in rules mode (as ``actiongate demo``
does, on the demo's ports 8091 and 8092 unless ``--any-ports``), serves ``examples/demo.yaml``
in process with recording on (:class:`gateway.replay.recording.Recorder`, what ``actiongate serve
--record DIR`` uses), and drives the conversations in :data:`CONVERSATIONS` like a chat widget:
answering forms and confirmations with follow-up requests. Every line of the cassettes is what
actually went over the wire, redacted. Existing cassettes in the output directory are replaced.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from examples.customer_api import running_customer_api
from examples.scripted_upstream import ScriptedUpstream, running_upstream
from gateway.app import create_app
from gateway.definitions.config import Config, parse_config
from gateway.replay.recording import Recorder

__all__ = [
    "CONVERSATIONS",
    "Session",
    "chat",
    "demo_config",
    "record_examples",
    "recording_gateway",
]

EXAMPLES = Path(__file__).resolve().parent
DEMO = EXAMPLES / "demo.yaml"
CASSETTES = EXAMPLES / "cassettes"
DEMO_UPSTREAM, DEMO_API = "http://127.0.0.1:8091/v1", "http://127.0.0.1:8092"
JANE = {"email": "jane@example.com"}


def demo_config(upstream_url: str, api_url: str, database: str) -> Config:
    """``examples/demo.yaml`` pointed at a running scripted model and customer API."""
    text = DEMO.read_text(encoding="utf-8")
    text = text.replace(DEMO_UPSTREAM, upstream_url).replace(DEMO_API, api_url)
    data = yaml.safe_load(text)
    data["database"] = database
    return parse_config(data, environ={})


@dataclass
class Session:
    """A recording gateway's client, and the scripted model behind it (to queue replies)."""

    client: httpx.AsyncClient
    upstream: ScriptedUpstream


@asynccontextmanager
async def recording_gateway(
    out: Path, *, demo_ports: bool = True, config_hook: Callable[[Config], None] | None = None
) -> AsyncIterator[Session]:
    """An in-process gateway recording into ``out``, with the demo's model and sample API.

    Args:
        out: The cassette directory.
        demo_ports: Serve the model and API on the demo's ports (8091, 8092), so cassettes
            show the same URLs as ``examples/demo.yaml``; otherwise on free ports.
        config_hook: Called with the config before the gateway starts, to change it.
    """
    up_port, api_port = (8091, 8092) if demo_ports else (0, 0)
    with tempfile.TemporaryDirectory(prefix="actiongate-record-") as tmp:
        async with (
            running_customer_api(port=api_port) as api,
            running_upstream(port=up_port, rules=True, api_key="demo-upstream-key") as upstream,
        ):
            config = demo_config(upstream.base_url, api.base_url, f"sqlite:///{tmp}/record.db")
            if config_hook is not None:
                config_hook(config)
            app = create_app(config)
            async with app.router.lifespan_context(app):
                transport = httpx.ASGITransport(app=Recorder(out).wrap(app))
                async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
                    yield Session(client, upstream)


async def chat(
    client: httpx.AsyncClient, conversation: dict[str, Any], messages: list[dict[str, Any]]
) -> dict[str, Any]:
    """One non-streamed request; returns the assistant message (and checks the status)."""
    body = {"model": "support", "messages": messages, "conversation": conversation}
    response = await client.post("/v1/chat/completions", json=body)
    response.raise_for_status()
    message: dict[str, Any] = response.json()["choices"][0]["message"]
    return message


async def order_status(client: httpx.AsyncClient) -> None:
    """An http action whose response is trimmed with ``response.select``."""
    user = {"role": "user", "content": "Where is my order A-10023?"}
    await chat(client, {"id": "example-order-status", "lead": JANE}, [user])


async def account_plan_streamed(client: httpx.AsyncClient) -> None:
    """A streamed request: the upstream's chunks are kept as sent."""
    user = {"role": "user", "content": "Which plan am I on? I am jane@example.com"}
    body = {
        "model": "support",
        "messages": [user],
        "stream": True,
        "conversation": {"id": "example-account-streamed", "lead": JANE},
    }
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        await response.aread()


async def refund_confirmed(client: httpx.AsyncClient) -> None:
    """A POST the customer confirms first; the call fetches an OAuth token."""
    conversation = {"id": "example-refund-confirmed", "lead": JANE}
    history: list[dict[str, Any]] = [
        {"role": "user", "content": "Please refund order A-10024, it arrived damaged."}
    ]
    ask = await chat(client, conversation, history)
    answer = {"role": "tool", "tool_call_id": ask["tool_calls"][0]["id"]}
    history += [ask, {**answer, "content": json.dumps({"confirmed": True})}]
    await chat(client, conversation, history)


async def return_form(client: httpx.AsyncClient) -> None:
    """A form the customer fills in; its submit request runs with the form's values."""
    conversation = {"id": "example-return-form"}
    history: list[dict[str, Any]] = [{"role": "user", "content": "I want to return my mug."}]
    ask = await chat(client, conversation, history)
    values = {"email": "jane@example.com", "order_number": "A-10023", "reason": "Damaged"}
    answer = {"role": "tool", "tool_call_id": ask["tool_calls"][0]["id"]}
    history += [ask, {**answer, "content": json.dumps(values)}]
    await chat(client, conversation, history)


CONVERSATIONS: tuple[Callable[[httpx.AsyncClient], Awaitable[None]], ...] = (
    order_status,
    account_plan_streamed,
    refund_confirmed,
    return_form,
)
"""The recorded conversations, each with a fixed conversation id (the cassette's name)."""


async def record_examples(out: Path = CASSETTES, *, demo_ports: bool = True) -> list[Path]:
    """Record every conversation of :data:`CONVERSATIONS` into ``out``; returns the files."""
    _empty(out)
    async with recording_gateway(out, demo_ports=demo_ports) as session:
        for conversation in CONVERSATIONS:
            await conversation(session.client)
    return sorted(out.glob("*.jsonl"))  # noqa: ASYNC240 - a few names, after the work


def _empty(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.jsonl"):
        old.unlink()


def main(argv: list[str] | None = None) -> None:
    """``python -m examples.record_cassettes``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=CASSETTES)
    parser.add_argument("--any-ports", action="store_true", help="free ports, not 8091/8092")
    args = parser.parse_args(argv)
    for path in asyncio.run(record_examples(args.out, demo_ports=not args.any_ports)):
        print(path)


if __name__ == "__main__":
    main()
