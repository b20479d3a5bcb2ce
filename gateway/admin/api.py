"""Admin REST API under ``/api`` (README, "Admin API and dashboard"), bearer-token protected.

The token is ``$ACTIONGATE_ADMIN_TOKEN``; when unset, one is generated at the first start,
printed once, and only its SHA-256 is stored (every replica reading the same database accepts
it). Any other token is a 401. Lists answer ``{"items": [...], "next_cursor": str | null}``.

Every route checks the token before a byte of the body is read, then reads the body itself,
capped at :data:`~gateway.net.inbound.MAX_REQUEST_BYTES` (413 past it, a declared
``Content-Length`` over it refused unread), and only then hands it to FastAPI's own parsing
(:class:`AdminRoute`).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.responses import Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field

from gateway.admin.backoff import backoff_of, client_address
from gateway.admin.service import Admin
from gateway.errors import RequestError
from gateway.net.inbound import MAX_REQUEST_BYTES, bearer_token, read_body_bytes, replay_receive
from gateway.stores.log_queries import LogFilter, query_page
from gateway.stores.log_stats import compute_overview, parse_window
from gateway.stores.logs import MAX_PAGE_SIZE, Outcome
from gateway.stores.secrets import AdminToken

__all__ = ["build_router"]


class TestRequest(BaseModel):
    """Body of ``POST /api/actions/{tool_name}/test``."""

    model_config = ConfigDict(extra="forbid")
    variables: dict[str, Any] = Field(default_factory=dict)
    """Conversation variables, nested (``{"lead": {"email": ..}}``) or dotted (``lead.email``)."""
    args: dict[str, Any] = Field(default_factory=dict)
    """Model arguments."""
    dry_run: bool = False
    """Render the request without sending it."""


class SecretValue(BaseModel):
    """Body of ``PUT /api/secrets/{name}``."""

    model_config = ConfigDict(extra="forbid")
    value: str = Field(min_length=1, max_length=8192)
    """The secret; stored encrypted, never returned."""


def _page(items: list[dict[str, Any]], key: str, cursor: str | None, limit: int) -> dict[str, Any]:
    limit = min(limit, MAX_PAGE_SIZE)
    if cursor:
        items = [i for i in items if str(i[key]) > cursor]
    page = items[:limit]
    more = len(items) > limit
    return {"items": page, "next_cursor": str(page[-1][key]) if more and page else None}


async def require_admin(request: Request) -> Admin:
    """The admin service, once the bearer token is checked (401 otherwise).

    Wrong tokens back off per client address (:mod:`gateway.admin.backoff`): while an address
    is refused (429 with ``Retry-After``), its token is not even checked.
    """
    services = request.app.state.services
    token: AdminToken = services.token
    backoff, address = backoff_of(request.app), client_address(request)
    backoff.check(address)
    presented = bearer_token(request.headers.get("authorization"))
    if not token.accepts(presented):
        if presented:  # only a presented token is a guess; a missing one tests nothing
            backoff.failed(address)
        raise RequestError(
            401, "a valid admin token is required", "unauthorized", kind="authentication_error"
        )
    backoff.succeeded(address)
    admin: Admin = services.admin
    await admin.refresh()
    return admin


_ADMIN_KEY = "actiongate.admin"
"""ASGI scope key where :class:`AdminRoute` leaves the admin service it authorised."""


async def _admin(request: Request) -> Admin:
    """The admin service :class:`AdminRoute` authorised (or :func:`require_admin`'s, if none)."""
    admin = request.scope.get(_ADMIN_KEY)
    return admin if isinstance(admin, Admin) else await require_admin(request)


class AdminRoute(APIRoute):
    """An ``/api`` route: the admin token first, then a capped body, then FastAPI's handling.

    FastAPI reads and parses a declared body before it solves any dependency, so
    ``Depends(require_admin)`` alone would let an anonymous client make the gateway read a body
    of any size before its 401.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """FastAPI's handler, behind the token check and the body cap."""
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            admin = await require_admin(request)
            body = await read_body_bytes(request, MAX_REQUEST_BYTES)
            request.scope[_ADMIN_KEY] = admin
            return await handler(Request(request.scope, replay_receive(body, request.receive)))

        return guarded


AdminDep = Annotated[Admin, Depends(_admin)]
JSONBody = Annotated[
    dict[str, Any],
    Body(description="A definition in the file format (README, 'Definitions and validation')."),
]
OptionalBody = Annotated[dict[str, Any] | None, Body()]
Limit = Annotated[
    int, Query(ge=1, description=f"page size; larger values are capped at {MAX_PAGE_SIZE}")
]


def _only(data: dict[str, Any], fields: tuple[str, ...]) -> None:
    """Refuse a body field the route does not know, naming it."""
    for name in data:
        if name not in fields:
            expected = ", ".join(fields)
            raise RequestError(
                422, f"{name}: unknown field (expected {expected})", "invalid_request", name
            )


def _refuse_nul(**params: str | None) -> None:
    for name, value in params.items():
        if value is not None and "\x00" in value:
            raise RequestError(400, f"{name} contains a NUL character", "invalid_request", name)


router = APIRouter(prefix="/api", tags=["admin"], route_class=AdminRoute)
"""The ``/api`` routes; they find the services in ``app.state.services``."""


@router.get("/actions")
async def list_actions(
    admin: AdminDep, cursor: str | None = None, limit: Limit = 50
) -> dict[str, Any]:
    """Every Custom Action (credentials masked)."""
    return _page(admin.list_actions(), "tool_name", cursor, limit)


@router.post("/actions", status_code=201)
async def create_action(data: JSONBody, admin: AdminDep) -> dict[str, Any]:
    """Create an action from a definition in the file format."""
    return await admin.create_action(data)


@router.get("/actions/{tool_name}")
async def get_action(tool_name: str, admin: AdminDep) -> dict[str, Any]:
    """One action (credentials masked)."""
    return admin.get_action(tool_name)


@router.put("/actions/{tool_name}")
async def replace_action(tool_name: str, data: JSONBody, admin: AdminDep) -> dict[str, Any]:
    """Replace an action; masked values sent back keep the stored credential."""
    return await admin.replace_action(tool_name, data)


@router.patch("/actions/{tool_name}")
async def patch_action(tool_name: str, data: JSONBody, admin: AdminDep) -> dict[str, Any]:
    """Merge fields into an action (JSON merge patch)."""
    return await admin.patch_action(tool_name, data)


@router.delete("/actions/{tool_name}", status_code=204)
async def delete_action(tool_name: str, admin: AdminDep) -> Response:
    """Delete an action."""
    await admin.delete_action(tool_name)
    return Response(status_code=204)


@router.post("/actions/{tool_name}/test")
async def test_action(tool_name: str, test: TestRequest, admin: AdminDep) -> dict[str, Any]:
    """Run an action once; a live POST/PUT/PATCH/DELETE changes real data (see ``warning``)."""
    result = await admin.test_action(tool_name, test.variables, test.args, test.dry_run)
    out = result.as_json()
    action = admin.workspace.actions[tool_name]
    method = getattr(action, "method", "GET")
    if not test.dry_run and method != "GET":
        out["warning"] = f"{method} ran for real without confirmation: it may change real data"
    return out


@router.get("/actions/{tool_name}/health")
async def action_health(tool_name: str, admin: AdminDep) -> dict[str, Any]:
    """The action's newest health check result (or null) and its history, newest first."""
    return await admin.action_health(tool_name)


@router.post("/actions/{tool_name}/health/run")
async def run_health_check(tool_name: str, admin: AdminDep) -> dict[str, Any]:
    """Run the action's health check now; the result is stored like a scheduled one."""
    return await admin.run_health_check(tool_name)


@router.get("/actions/{tool_name}/eval-cases")
async def eval_cases(tool_name: str, admin: AdminDep) -> dict[str, Any]:
    """The action's Guardrail check cases."""
    cases = await admin.guardrails.cases(tool_name)
    return {"items": [c.model_dump() for c in cases], "next_cursor": None}


@router.put("/actions/{tool_name}/eval-cases")
async def put_eval_cases(tool_name: str, data: JSONBody, admin: AdminDep) -> dict[str, Any]:
    """Replace the action's cases: ``{"cases": [{"message", "expect", ...}]}``."""
    _only(data, ("cases",))
    cases = await admin.guardrails.put_cases(tool_name, data.get("cases"))
    return {"items": [c.model_dump() for c in cases], "next_cursor": None}


@router.get("/actions/{tool_name}/eval-cases/starters")
async def eval_case_starters(tool_name: str, admin: AdminDep) -> dict[str, Any]:
    """Starter cases made from the action's guardrail by fixed rules; nothing is stored."""
    cases = admin.guardrails.starters(tool_name)
    return {"items": [c.model_dump() for c in cases], "next_cursor": None}


@router.post("/actions/{tool_name}/eval")
async def run_eval(tool_name: str, admin: AdminDep, data: OptionalBody = None) -> dict[str, Any]:
    """Run the Guardrail check (``{"agent", "runs"}``); the shape of ``actiongate eval --json``.

    The agent's real upstream answers; no action is run.
    """
    options = data or {}
    _only(options, ("agent", "runs"))
    report = await admin.guardrails.run(tool_name, options.get("agent"), options.get("runs", 1))
    return report.to_dict()


@router.get("/actions/{tool_name}/eval-suite")
async def eval_suite(
    tool_name: str, admin: AdminDep, agent: str | None = None, runs: int = 1
) -> Response:
    """The cases as a suite file for ``actiongate eval SUITE --config FILE``."""
    text = await admin.guardrails.suite_yaml(tool_name, agent, runs)
    return Response(text, media_type="application/yaml")


@router.get("/agents")
async def list_agents(
    admin: AdminDep, cursor: str | None = None, limit: Limit = 50
) -> dict[str, Any]:
    """Every agent with its enabled actions."""
    return _page(admin.list_agents(), "id", cursor, limit)


@router.post("/agents", status_code=201)
async def create_agent(data: JSONBody, admin: AdminDep) -> dict[str, Any]:
    """Create an agent."""
    return await admin.save_agent(None, data)


@router.get("/agents/{agent_id}")
async def get_agent(agent_id: str, admin: AdminDep) -> dict[str, Any]:
    """One agent (client keys masked)."""
    return admin.get_agent(agent_id)


@router.put("/agents/{agent_id}")
async def replace_agent(agent_id: str, data: JSONBody, admin: AdminDep) -> dict[str, Any]:
    """Replace an agent."""
    return await admin.save_agent(agent_id, data)


@router.patch("/agents/{agent_id}")
async def patch_agent(agent_id: str, data: JSONBody, admin: AdminDep) -> dict[str, Any]:
    """Merge fields into an agent."""
    return await admin.save_agent(agent_id, data, merge=True)


@router.delete("/agents/{agent_id}", status_code=204)
async def delete_agent(agent_id: str, admin: AdminDep) -> Response:
    """Delete an agent."""
    await admin.delete_agent(agent_id)
    return Response(status_code=204)


@router.put("/agents/{agent_id}/actions/{tool_name}")
async def enable(agent_id: str, tool_name: str, admin: AdminDep) -> dict[str, Any]:
    """Enable an action for an agent."""
    return await admin.toggle(agent_id, tool_name, True)


@router.delete("/agents/{agent_id}/actions/{tool_name}")
async def disable(agent_id: str, tool_name: str, admin: AdminDep) -> dict[str, Any]:
    """Disable an action for an agent."""
    return await admin.toggle(agent_id, tool_name, False)


@router.get("/agents/{agent_id}/tools")
async def tools(agent_id: str, admin: AdminDep, format: str = "openai") -> Any:
    """The agent's tools in an export format."""
    return admin.export(agent_id, format)


@router.get("/secrets")
async def list_secrets(admin: AdminDep) -> dict[str, Any]:
    """Secret names and where each comes from; values are never returned."""
    return {"items": await admin.list_secrets(), "next_cursor": None}


@router.put("/secrets/{name}", status_code=204)
async def put_secret(name: str, secret: SecretValue, admin: AdminDep) -> Response:
    """Set a secret in the encrypted store (referenced as ``{{secrets.NAME}}``)."""
    await admin.put_secret(name, secret.value)
    return Response(status_code=204)


@router.delete("/secrets/{name}", status_code=204)
async def delete_secret(name: str, admin: AdminDep) -> Response:
    """Remove a stored secret; the config file's value, if any, applies again."""
    await admin.delete_secret(name)
    return Response(status_code=204)


@router.get("/logs")
async def logs(
    admin: AdminDep,
    action: str | None = None,
    agent: str | None = None,
    conversation_id: str | None = None,
    outcome: Outcome | None = None,
    since: Annotated[
        datetime | None, Query(description="ISO 8601, inclusive; naive is UTC")
    ] = None,
    until: Annotated[
        datetime | None, Query(description="ISO 8601, exclusive; naive is UTC")
    ] = None,
    cursor: str | None = None,
    limit: Limit = 50,
) -> dict[str, Any]:
    """Execution records, newest first."""
    _refuse_nul(action=action, agent=agent, conversation_id=conversation_id, cursor=cursor)
    store = admin.runtime.logstore
    await store.flush()
    where = LogFilter(
        action=action,
        agent=agent,
        conversation_id=conversation_id,
        outcome=outcome,
        since=since,
        until=until,
    )
    try:
        records, next_cursor = await query_page(
            admin.runtime.engine, where, limit=min(limit, MAX_PAGE_SIZE), cursor=cursor
        )
    except ValueError:
        raise RequestError(400, "invalid cursor", "invalid_cursor", "cursor") from None
    return {"items": [r.to_dict() for r in records], "next_cursor": next_cursor}


@router.get("/stats")
async def stats(
    admin: AdminDep,
    window: Annotated[str | None, Query(description="1h, 24h (the default) or 7d")] = None,
    agent: str | None = None,
) -> dict[str, Any]:
    """The Overview's numbers: per agent and action, a time series and refusals by reason."""
    _refuse_nul(window=window, agent=agent)
    try:
        chosen = parse_window(window)
    except ValueError as e:
        raise RequestError(400, str(e), "invalid_window", "window") from None
    await admin.runtime.logstore.flush()
    overview = await compute_overview(admin.runtime.engine, chosen, agent=agent or None)
    return overview.to_dict()


@router.get("/logs/{record_id}")
async def log(record_id: str, admin: AdminDep) -> dict[str, Any]:
    """One execution record."""
    _refuse_nul(record_id=record_id)
    await admin.runtime.logstore.flush()
    record = await admin.runtime.logstore.get(record_id)
    if record is None:
        raise RequestError(404, f"log record {record_id!r} not found", "not_found")
    return record.to_dict()


def build_router() -> APIRouter:
    """The ``/api`` routes (an app includes a copy of them)."""
    return router
