"""An in-process gateway for proxy tests: the ASGI app with its lifespan, a scripted upstream
and the local action API on loopback sockets."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import httpx2

from examples.scripted_upstream import ScriptedUpstream, running_upstream
from gateway.app import Services, create_app
from gateway.definitions.config import parse_config
from gateway.stores.logs import ExecutionRecord
from tests.support.action_api import ActionAPI, running_api

UPSTREAM_KEY = "up-SECRET-key-123"
CRM_SECRET = "crm-SECRET-abc987"


def actions(base: str) -> list[dict[str, Any]]:
    """The test agent's actions, pointed at the local action API."""
    return [
        {
            "name": "Get Customer Account",
            "url": f"{base}/echo/customers?email={{{{lead.email}}}}",
            "headers": {"Authorization": "Bearer {{secrets.CRM}}"},
            "when_not_to_use": "Do not use without the customer's email address.",
        },
        {
            "name": "Look up order",
            "url": f"{base}/echo/orders/{{{{args.order_number}}}}",
            "parameters": {"order_number": {"required": True}},
        },
        {
            "name": "Submit refund",
            "method": "POST",
            "url": f"{base}/echo/refunds",
            "parameters": {"order_number": {"required": True}},
            "body": {"order": "{{args.order_number}}", "email": "{{lead.email}}"},
        },
        {
            "name": "Return request",
            "type": "form",
            "title": "Start a return",
            "fields": [
                {"name": "email", "type": "email", "required": True, "maps_to": "lead.email"},
                {"name": "order_number", "required": True, "pattern": "[A-Z]-[0-9]{5}"},
            ],
            "submit": {
                "method": "POST",
                "url": f"{base}/echo/returns",
                "body": {"email": "{{form.email}}", "order": "{{form.order_number}}"},
            },
        },
        {
            "name": "Book a Demo",
            "type": "button",
            "label": "Book a demo",
            "on_click": {"navigate": "https://example.com/demo?email={{lead.email}}"},
        },
        {
            "name": "Start Refund",
            "type": "button",
            "label": "Start refund",
            "on_click": {"http": {"method": "POST", "url": f"{base}/echo/refunds/latest"}},
        },
    ]


def sdk_http_client(gateway: Gateway) -> httpx2.AsyncClient:
    """An HTTP client for the official SDKs (openai, anthropic: they bring their own client
    package, httpx2) that reaches this in-process gateway over the same ASGI transport."""
    app = gateway.client._transport.app  # type: ignore[attr-defined]
    return httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://gw")


@dataclass
class Gateway:
    client: httpx.AsyncClient
    upstream: ScriptedUpstream
    api: ActionAPI
    services: Services

    async def chat(self, **body: Any) -> httpx.Response:
        body.setdefault("model", "support")
        return await self.client.post("/v1/chat/completions", json=body)

    async def records(self, **filters: Any) -> list[ExecutionRecord]:
        store = self.services.runtime.logstore
        await store.flush()
        return (await store.query(**filters))[0]


@asynccontextmanager
async def running_gateway(
    tmp_path: Path,
    *,
    api_keys: list[str] | None = None,
    bind_host: str | None = None,
    base_url: str = "http://gw",
    settings: dict[str, Any] | None = None,
    more_agents: list[dict[str, Any]] | None = None,
    app_options: dict[str, Any] | None = None,
    **agent: Any,
) -> AsyncIterator[Gateway]:
    """A gateway app in process (ASGI transport) on a scripted upstream and the action API.

    ``settings`` adds top-level config keys, ``more_agents`` agents after ``support``;
    ``bind_host`` is what ``serve --host`` would pass (the Host rule depends on it);
    ``app_options`` go to ``create_app`` (``health_tick_s``).
    """
    async with running_api() as api, running_upstream(api_key=UPSTREAM_KEY) as upstream:
        config = parse_config(
            {
                "upstream": {"base_url": upstream.base_url, "api_key": UPSTREAM_KEY, "model": "m1"},
                "database": f"sqlite:///{tmp_path / 'gw.db'}",
                "egress": {"allow": ["127.0.0.1"]},
                "secrets": {"CRM": CRM_SECRET},
                "agents": [
                    {
                        "id": "support",
                        "system_prompt": "You are the support assistant.",
                        "api_keys": api_keys or [],
                        **agent,
                    },
                    *(more_agents or []),
                ],
                "actions": actions(api.base_url),
                **(settings or {}),
            },
            environ={},
        )
        app = create_app(config, bind_host=bind_host, **(app_options or {}))
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
                yield Gateway(client, upstream, api, app.state.services)
