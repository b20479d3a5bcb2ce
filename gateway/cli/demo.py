"""``actiongate demo``: the whole product offline, in one process.

Starts the sample customer API (port 8092, ``--api-port``), a scripted OpenAI-compatible model
that picks tools like a support model would (port 8091, ``--upstream-port``), and the gateway on
``examples/demo.yaml`` pointed at those two (port 8080, ``--port``), then prints what to try.
``--check`` runs a short tour with the official ``openai`` SDK (the ``demo`` extra) against the
running gateway — and, with the ``mcp`` extra, one MCP call whose missing email is asked by
elicitation — and exits 0 only if every step behaved. A port that is taken (a second demo) is
one line naming it and the option that moves it, before anything has started.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from gateway.definitions.config import Config, parse_config
from gateway.errors import ConfigError
from gateway.extras import require_extra

__all__ = ["DemoPorts", "demo_config", "run_demo"]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
HOST = "127.0.0.1"
UPSTREAM_PORT = 8091
"""The scripted model's port as ``examples/demo.yaml`` names it."""
DEMO_ADMIN_TOKEN = "demo-admin-token"
API_PORT = 8092
"""The sample API's port as ``examples/demo.yaml`` names it."""


@dataclass(frozen=True, slots=True)
class DemoPorts:
    """Where the demo's three servers listen (``--port``, ``--upstream-port``, ``--api-port``)."""

    gateway: int = 8080
    upstream: int = UPSTREAM_PORT
    api: int = API_PORT


TRY_IT = """\
actiongate demo is running (Ctrl-C to stop):

  gateway        http://127.0.0.1:{port}/v1   (agent id: support)
  dashboard      http://127.0.0.1:{port}/     (admin token: {token})
  scripted model http://127.0.0.1:{up}/v1
  sample API     http://127.0.0.1:{api}

Try it with the openai SDK (pip install openai):

  from openai import OpenAI
  client = OpenAI(base_url="http://127.0.0.1:{port}/v1", api_key="unused")
  reply = client.chat.completions.create(
      model="support",
      messages=[{{"role": "user", "content": "Where is my order A-10023?"}}],
      extra_body={{"conversation": {{"id": "demo-1", "lead": {{"email": "jane@example.com"}}}}}},
  )
  print(reply.choices[0].message.content)
  print(reply.model_extra["actiongate"]["executions"])

or with curl:

  curl -s http://127.0.0.1:{port}/v1/chat/completions -H 'Content-Type: application/json' \\
    -d '{{"model": "support", "messages": [{{"role": "user", "content": "What plan am I on?"}}],
         "conversation": {{"lead": {{"email": "jane@example.com"}}}}}}'

Other messages the scripted model understands: "I want to return something" (a form),
"Refund order A-10024, it arrived damaged" (a confirmation), "Can I get a demo?" (a button).
The same agent speaks the Responses API (client.responses.create) and Anthropic's Messages API
(anthropic.Anthropic(base_url="http://127.0.0.1:{port}")).

MCP (streamable HTTP): http://127.0.0.1:{port}/mcp/support — call look_up_order with
order_number A-10023; a client with elicitation is asked for the email (jane@example.com).
Execution logs: actiongate logs --db sqlite:///actiongate-demo.db
"""

MCP_EMAIL = "jane@example.com"


def demo_config(ports: DemoPorts) -> Config:
    """``examples/demo.yaml`` with its model and sample API URLs moved to ``ports``."""
    text = (EXAMPLES / "demo.yaml").read_text(encoding="utf-8")
    text = text.replace(f"http://{HOST}:{UPSTREAM_PORT}", f"http://{HOST}:{ports.upstream}")
    text = text.replace(f"http://{HOST}:{API_PORT}", f"http://{HOST}:{ports.api}")
    return parse_config(yaml.safe_load(text))


async def _tour(port: int, say: Callable[[str], None]) -> bool:
    """Drive the running demo like a chat widget would; True when every step behaved."""
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)
    conversation = {"id": "demo-tour", "lead": {"email": "jane@example.com"}}
    ok = True

    async def ask(messages: list[Any]) -> tuple[Any, dict[str, Any]]:
        reply = await client.chat.completions.create(
            model="support", messages=messages, extra_body={"conversation": conversation}
        )
        return reply, (reply.model_extra or {}).get("actiongate", {})

    def check(step: str, passed: bool, detail: str) -> None:
        nonlocal ok
        ok &= passed
        say(f"{'ok  ' if passed else 'FAIL'} {step}: {detail}")

    user = {"role": "user", "content": "Where is my order A-10023?"}
    reply, ext = await ask([user])
    outcomes = [e["outcome"] for e in ext.get("executions", [])]
    check("order lookup", outcomes == ["success"], reply.choices[0].message.content or "")

    user = {"role": "user", "content": "I want to return something"}
    reply, ext = await ask([user])
    ui = ext.get("ui") or [{}]
    check("return form shown", ui[0].get("kind") == "form", json.dumps(ui[0].get("title")))
    if ui[0].get("kind") == "form":
        answer = {"email": "jane@example.com", "order_number": "A-10023", "reason": "Damaged"}
        history = [
            user,
            reply.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": ui[0]["tool_call_id"], "content": json.dumps(answer)},
        ]
        reply, ext = await ask(history)
        outcomes = [e["outcome"] for e in ext.get("executions", [])]
        check("form submitted", outcomes == ["success"], reply.choices[0].message.content or "")

    user = {"role": "user", "content": "Refund order A-10024, it arrived damaged"}
    reply, ext = await ask([user])
    ui = ext.get("ui") or [{}]
    check("refund asks first", ui[0].get("kind") == "confirm", str(ui[0].get("message")))
    if ui[0].get("kind") == "confirm":
        history = [
            user,
            reply.choices[0].message.model_dump(exclude_none=True),
            {
                "role": "tool",
                "tool_call_id": ui[0]["tool_call_id"],
                "content": '{"confirmed": true}',
            },
        ]
        reply, ext = await ask(history)
        outcomes = [e["outcome"] for e in ext.get("executions", [])]
        check("refund confirmed", outcomes == ["success"], reply.choices[0].message.content or "")
    await client.close()
    if importlib.util.find_spec("mcp") is None:
        say("skip MCP call: the mcp extra is not installed (pip install 'actiongate[mcp]')")
        return ok
    passed, detail = await _mcp_call(port)
    check("MCP call, email asked by elicitation", passed, detail)
    return ok


async def _mcp_call(port: int) -> tuple[bool, str]:
    """``look_up_order`` over MCP like a client whose user answers the email question."""
    from mcp import Client
    from mcp.client.session import ClientRequestContext
    from mcp.client.streamable_http import streamable_http_client
    from mcp_types import ElicitRequestParams, ElicitResult, ErrorData

    asked: list[str] = []

    async def user(
        context: ClientRequestContext, params: ElicitRequestParams
    ) -> ElicitResult | ErrorData:
        asked.append(str(params.message))
        return ElicitResult(action="accept", content={"email": MCP_EMAIL})

    url = f"http://127.0.0.1:{port}/mcp/support"
    async with Client(streamable_http_client(url), elicitation_callback=user) as client:
        result = await client.call_tool("look_up_order", {"order_number": "A-10023"})
    text = " ".join(getattr(part, "text", "") for part in result.content)
    passed = not result.is_error and bool(asked) and "shipped" in text
    return passed, f"asked {len(asked)} question(s); " + " ".join(text.split())[:160]


async def _start_samples(
    stack: contextlib.AsyncExitStack[Any], ports: DemoPorts, key: str
) -> DemoPorts:
    """Start the sample API and the scripted model; a port either cannot bind is one line.

    Returns:
        ``ports`` with the ports really bound (they differ where 0 asked for a free one).
    """
    if str(ROOT) not in sys.path:  # examples/ is not installed with the package
        sys.path.insert(0, str(ROOT))
    from examples.customer_api import running_customer_api
    from examples.scripted_upstream import running_upstream
    from gateway.cli.serving import listen_error

    samples: list[tuple[int, str, str, contextlib.AbstractAsyncContextManager[Any]]] = [
        (ports.api, "sample API", "--api-port", running_customer_api(port=ports.api)),
        (
            ports.upstream,
            "scripted model",
            "--upstream-port",
            running_upstream(port=ports.upstream, rules=True, api_key=key),
        ),
    ]
    bound: list[int] = []
    for port, what, flag, server in samples:
        try:
            started = await stack.enter_async_context(server)
        except OSError as e:
            raise listen_error(HOST, port, e, what=what, flag=flag) from None
        bound.append(int(started.base_url.removesuffix("/v1").rsplit(":", 1)[1]))
    return replace(ports, api=bound[0], upstream=bound[1])


async def _serve(ports: DemoPorts, check: bool, sock: socket.socket) -> int:
    import uvicorn

    from gateway.app import create_app
    from gateway.cli.serving import JoinedWritesProtocol, ReadyServer

    # A known token, so the printed instructions can say how to open the dashboard.
    os.environ.setdefault("ACTIONGATE_ADMIN_TOKEN", DEMO_ADMIN_TOKEN)
    async with contextlib.AsyncExitStack() as stack:
        key = demo_config(ports).upstream.api_key
        ports = await _start_samples(stack, ports, key)
        app = create_app(demo_config(ports), bind_host=HOST)
        config = uvicorn.Config(
            app, log_level="warning", access_log=False, http=JoinedWritesProtocol
        )
        server = ReadyServer(config)
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        await server.ready.wait()  # a failed start-up ends the loop with SystemExit instead
        if not check:
            token = os.environ["ACTIONGATE_ADMIN_TOKEN"]
            text = TRY_IT.format(port=ports.gateway, up=ports.upstream, api=ports.api, token=token)
            print(text, flush=True)
            await serving  # until Ctrl-C
            return 0
        try:
            passed = await _tour(ports.gateway, lambda line: print(line, flush=True))
        finally:
            server.should_exit = True
            await serving
        return 0 if passed else 1


def run_demo(*, ports: DemoPorts | None = None, check: bool = False) -> int:
    """Run the demo until Ctrl-C (or, with ``check``, run the tour and return its status).

    Raises:
        ConfigError: no ``examples/`` folder, ``--check`` without the openai SDK, a port that
            cannot be listened on, or a gateway that did not start (each one line).
    """
    from gateway.cli.serving import listen

    ports = ports or DemoPorts()
    if not (EXAMPLES / "demo.yaml").exists():
        raise ConfigError("the demo needs the repository's examples/ folder (run from a checkout)")
    if check:
        require_extra("openai", "demo", "actiongate demo --check")  # before starting anything
    with contextlib.closing(listen(HOST, ports.gateway, what="gateway", flag="--port")) as sock:
        ports = replace(ports, gateway=sock.getsockname()[1])
        try:
            return asyncio.run(_serve(ports, check, sock))
        except KeyboardInterrupt:
            return 0
        except SystemExit:
            # uvicorn's way of saying the app's start-up failed; it has logged why.
            raise ConfigError(
                "the demo gateway did not start (the reason is logged above)"
            ) from None
