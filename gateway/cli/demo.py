"""``actiongate demo``: the whole product offline, in one process.

Starts the sample customer API (port 8092), a scripted OpenAI-compatible model that picks tools
like a support model would (port 8091), and the gateway on ``examples/demo.yaml`` (port 8080),
then prints what to try. ``--check`` runs a short tour with the official ``openai`` SDK against
the running gateway and exits 0 only if every step behaved.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.definitions.config import load_config
from gateway.errors import ConfigError

__all__ = ["run_demo"]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
UPSTREAM_PORT = 8091
DEMO_ADMIN_TOKEN = "demo-admin-token"
API_PORT = 8092

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
Execution logs: actiongate logs --db sqlite:///actiongate-demo.db
"""


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
    return ok


async def _serve(port: int, check: bool) -> int:
    import uvicorn

    sys.path.insert(0, str(ROOT))
    from examples.customer_api import running_customer_api
    from examples.scripted_upstream import running_upstream
    from gateway.app import create_app

    config = load_config(EXAMPLES / "demo.yaml")
    # A known token, so the printed instructions can say how to open the dashboard.
    os.environ.setdefault("ACTIONGATE_ADMIN_TOKEN", DEMO_ADMIN_TOKEN)
    app = create_app(config)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )
    async with (
        running_customer_api(port=API_PORT),
        running_upstream(port=UPSTREAM_PORT, rules=True, api_key=config.upstream.api_key),
    ):
        serving = asyncio.create_task(server.serve())
        while not server.started:
            if serving.done():
                return 1  # uvicorn already said why (e.g. the port is taken)
            await asyncio.sleep(0.05)
        if not check:
            token = os.environ["ACTIONGATE_ADMIN_TOKEN"]
            print(TRY_IT.format(port=port, up=UPSTREAM_PORT, api=API_PORT, token=token), flush=True)
            await serving
            return 0
        try:
            passed = await _tour(port, lambda line: print(line, flush=True))
        finally:
            server.should_exit = True
            await serving
        return 0 if passed else 1


def run_demo(*, port: int = 8080, check: bool = False) -> int:
    """Run the demo until Ctrl-C (or, with ``check``, run the tour and return its status)."""
    if not (EXAMPLES / "demo.yaml").exists():
        raise ConfigError("the demo needs the repository's examples/ folder (run from a checkout)")
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(_serve(port, check))
    return 0
