"""The ASGI application: the OpenAI-compatible proxy (and, later, the admin API and dashboard).

:func:`create_app` takes its dependencies, so tests can build an app around a scripted upstream
and a temporary database; :func:`app_from_config` builds everything from a config file's model.
"""

from __future__ import annotations

import asyncio
import hmac
import inspect
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway.admin.api import build_router
from gateway.admin.backoff import backoff_of, client_address
from gateway.admin.dashboard import build_dashboard, mount_static
from gateway.admin.service import Admin
from gateway.definitions.config import Config
from gateway.engine.health_schedule import TICK_S, HealthScheduler
from gateway.engine.runtime import Runtime, open_runtime
from gateway.engine.workspace import Workspace
from gateway.errors import RequestError, UpstreamError
from gateway.fronts import anthropic as fronts_anthropic
from gateway.fronts import chat as fronts_chat
from gateway.fronts import responses as fronts_responses
from gateway.fronts.routing import FrontRoutes
from gateway.mcp.mount import LazyMcp
from gateway.net.browser import (
    BrowserGuard,
    BrowserPolicy,
    default_allowed_hosts,
)
from gateway.net.inbound import (
    MAX_REQUEST_BYTES,
    bearer_token,
)
from gateway.net.upstream import Upstream
from gateway.proxy.loop import Proxy
from gateway.stores.conversations import ConversationStore
from gateway.stores.definitions import DefinitionStore
from gateway.stores.responses import ResponseStore
from gateway.stores.secrets import AdminToken, SecretStore, ensure_admin_token, store_key
from gateway.telemetry import metrics
from gateway.telemetry.middleware import TelemetryMiddleware
from gateway.version import __version__

__all__ = ["MAX_REQUEST_BYTES", "Services", "create_app"]

log = logging.getLogger("actiongate")


FRONT_PATHS = {
    "/v1/chat/completions": "chat",
    fronts_responses.PATH: "responses",
    fronts_anthropic.PATH: "messages",
}
"""The client fronts by path, as the ``front`` label names them."""
REFRESH_INTERVAL_S = 2.0
"""How often a replica checks the database for definitions another replica changed."""


@dataclass(slots=True)
class Services:
    """What the routes use; built at start-up by the lifespan."""

    runtime: Runtime
    workspace: Workspace
    proxy: Proxy
    upstream: Upstream
    admin: Admin
    token: AdminToken
    responses: ResponseStore
    health: HealthScheduler | None = None


async def _refresh_forever(admin: Admin) -> None:
    while True:
        await asyncio.sleep(REFRESH_INTERVAL_S)
        try:
            await admin.refresh()
        except Exception:  # a failed poll must not stop the next one
            log.exception("could not refresh definitions")


def error_response(
    status: int,
    message: str,
    kind: str,
    code: str | None,
    param: str | None = None,
    request: Request | None = None,
) -> Response:
    """An error in the front's shape: Anthropic's on ``/v1/messages``, OpenAI's elsewhere."""
    path = request.url.path if request is not None else ""
    body = error_body(path, status, message, code, kind=kind, param=param)
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def error_body(
    path: str,
    status: int,
    message: str,
    code: str | None,
    *,
    kind: str = "invalid_request_error",
    param: str | None = None,
) -> dict[str, Any]:
    """The error body a route answers with: Anthropic's shape on its path, OpenAI's elsewhere."""
    if path == fronts_anthropic.PATH:
        return fronts_anthropic.error_body(status, message)
    return {"error": {"message": message, "type": kind, "code": code, "param": param}}


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


def services_of(request: Request) -> Services:
    """The running app's :class:`Services` (set by the lifespan)."""
    result: Services = request.app.state.services
    return result


def _lifespan(
    config: Config, database: str | None, mcp: LazyMcp, health_tick_s: float = TICK_S
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """Open the database, clients and stores at start-up; close them at shutdown."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = await open_runtime(config, database=database)
        workspace = Workspace(config)
        upstream = Upstream()
        proxy = Proxy(workspace, runtime.executor, upstream, ConversationStore(runtime.engine))
        token = await ensure_admin_token(runtime.engine)
        secret_store = SecretStore(runtime.engine, store_key(token.derive_key))
        admin = Admin(config, workspace, DefinitionStore(runtime.engine), runtime, secret_store)
        await admin.refresh(force=True)
        health = HealthScheduler(workspace, runtime.executor, runtime.health, tick_s=health_tick_s)
        health.disable = admin.disable_action
        health.start()
        responses = ResponseStore(runtime.engine)
        app.state.services = Services(
            runtime, workspace, proxy, upstream, admin, token, responses, health
        )
        poller = asyncio.create_task(_refresh_forever(admin))
        try:
            yield
        finally:
            await mcp.close()
            poller.cancel()
            await upstream.close()
            await responses.close()
            await health.close()
            await runtime.close()

    return lifespan


# --- errors: every failure leaves in OpenAI's shape -----------------------------------------


async def _on_request_error(request: Request, e: Exception) -> Response:
    assert isinstance(e, RequestError)
    response = error_response(e.status, str(e), e.kind, e.code, e.param, request)
    response.headers.update(e.headers)
    return response


async def _on_upstream_error(request: Request, e: Exception) -> Response:
    assert isinstance(e, UpstreamError)
    return error_response(e.status, str(e), "upstream_error", e.code, request=request)


async def _on_validation_error(request: Request, e: Exception) -> Response:
    assert isinstance(e, RequestValidationError)
    err = e.errors()[0]
    field = ".".join(str(p) for p in err["loc"][1:]) or None
    return error_response(
        422, f"{field}: {err['msg']}", "invalid_request_error", "invalid_request", field, request
    )


async def _on_database_busy(_request: Request, e: Exception) -> Response:
    # Pool exhausted or database briefly down: a retryable condition, not a server bug.
    log.warning("database unavailable: %s", type(e).__name__)
    response = error_response(
        503,
        "the gateway's database is busy or unavailable; retry shortly",
        "service_unavailable",
        "database_unavailable",
    )
    response.headers["Retry-After"] = "1"
    return response


async def _on_http_error(request: Request, e: Exception) -> Response:
    assert isinstance(e, StarletteHTTPException)
    return error_response(
        e.status_code, str(e.detail), "invalid_request_error", None, request=request
    )


async def _on_unexpected(request: Request, e: Exception) -> Response:
    log.exception("unexpected error")  # the trace goes to the log, never to the client
    return error_response(500, "internal error", "server_error", "internal_error", request=request)


def _install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestError, _on_request_error)
    app.add_exception_handler(UpstreamError, _on_upstream_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(SQLAlchemyTimeoutError, _on_database_busy)
    app.add_exception_handler(DBAPIError, _on_database_busy)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(Exception, _on_unexpected)


# --- the OpenAI-compatible routes -------------------------------------------------------------


async def chat_completions(request: Request) -> Response:
    """``POST /v1/chat/completions`` (:mod:`gateway.fronts.chat`)."""
    return await fronts_chat.chat_completions(request, services_of(request))


async def anthropic_messages(request: Request) -> Response:
    """``POST /v1/messages`` (:mod:`gateway.fronts.anthropic`)."""
    return await fronts_anthropic.messages(request, services_of(request))


async def responses_create(request: Request) -> Response:
    """``POST /v1/responses`` (:mod:`gateway.fronts.responses`)."""
    return await fronts_responses.create_response(request, services_of(request))


async def list_models(request: Request) -> Response:
    """The agents this client key may use."""
    svc = services_of(request)
    key = bearer_token(request.headers.get("authorization"))
    data = []
    for agent_id in svc.workspace.agents:
        view = svc.workspace.view(agent_id)
        if view is not None and view.accepts(key):
            data.append(_model_object(agent_id))
    return _json({"object": "list", "data": data})


def _model_object(agent_id: str) -> dict[str, Any]:
    return {"id": agent_id, "object": "model", "created": 0, "owned_by": "actiongate"}


async def retrieve_model(request: Request) -> Response:
    """One agent as an OpenAI model object; 404 for an agent this key may not use."""
    svc = services_of(request)
    key = bearer_token(request.headers.get("authorization"))
    agent_id = request.path_params["model_id"]
    view = svc.workspace.view(agent_id)
    if view is None or not view.accepts(key):
        # The same answer for an unknown agent and a locked one: ids are not disclosed.
        raise RequestError(
            404, f"unknown model {agent_id[:64]!r}: use an agent id", "model_not_found"
        )
    return _json(_model_object(agent_id))


async def metrics_endpoint(request: Request) -> Response:
    """``GET /metrics``: the Prometheus exposition, for the admin token or ``metrics_token``.

    A wrong token backs off per address like the admin API's (429 with ``Retry-After``).
    """
    svc = services_of(request)
    backoff, address = backoff_of(request.app), client_address(request)
    backoff.check(address)
    presented = bearer_token(request.headers.get("authorization"))
    scraper: str | None = request.app.state.metrics_token
    allowed = svc.token.accepts(presented) or (
        scraper is not None
        and presented is not None
        and hmac.compare_digest(presented.encode(), scraper.encode())
    )
    if not allowed:
        if presented:
            backoff.failed(address)
        raise RequestError(
            401,
            "GET /metrics needs the admin token or the metrics_token as a bearer token",
            "unauthorized",
            kind="authentication_error",
        )
    backoff.succeeded(address)
    return Response(metrics.render(), media_type=metrics.CONTENT_TYPE)


async def health(request: Request) -> Response:
    """Liveness plus the log writer's counters."""
    svc = services_of(request)
    return _json(
        {
            "status": "ok",
            "version": __version__,
            "log": dict(svc.runtime.logstore.stats()),
            "limits": svc.runtime.executor.limits.backend,
            "actions": svc.runtime.executor.limits.snapshot(),
        }
    )


def browser_policy(
    config: Config, bind_host: str | None, services: Callable[[], Services]
) -> BrowserPolicy:
    """The Host, Origin and CORS rules in force (agents' origins read live)."""
    return BrowserPolicy(
        allowed_hosts=tuple(default_allowed_hosts(bind_host, config.allowed_hosts)),
        allow_origins=frozenset(config.cors.allow_origins),
        agent_origins=lambda agent_id: services().workspace.origins(agent_id),
        error_body=error_body,
    )


_WITHOUT_FRAMEWORK_TELEMETRY: dict[str, Any] = (
    {"telemetry": {"tracing": False, "metrics": False, "logs": False}}
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters
    else {}
)
"""FastAPI's own OpenTelemetry (newer releases) off: the gateway's middleware makes the request
spans and metrics (``tracing``, ``/metrics``). On, a process-wide provider (``opentelemetry-
instrument``, say) would get a second server span and request histogram per request, and every
request would pay FastAPI's look-ups of the global providers."""


def create_app(
    config: Config,
    *,
    database: str | None = None,
    bind_host: str | None = None,
    health_tick_s: float = TICK_S,
) -> FastAPI:
    """Build the application; its lifespan opens the database and clients and closes them.

    Args:
        config: The loaded configuration.
        database: Overrides ``config.database``.
        bind_host: The address ``serve`` listens on: bound to loopback with no
            ``allowed_hosts``, only the loopback host names are answered.
        health_tick_s: Seconds between looks for due health checks.
    """
    mcp = LazyMcp(lambda: app.state.services)
    app = FastAPI(
        title="actiongate",
        version=__version__,
        lifespan=_lifespan(config, database, mcp, health_tick_s),
        **_WITHOUT_FRAMEWORK_TELEMETRY,
    )
    app.mount("/mcp", mcp)
    _install_error_handlers(app)
    # The client fronts (OpenAI's and Anthropic's APIs, not ours to document in the OpenAPI
    # schema): FrontRoutes below answers their POSTs; these plain routes only answer the other
    # methods (405) like any other route.
    fronts = {
        "/v1/chat/completions": chat_completions,
        fronts_anthropic.PATH: anthropic_messages,
        fronts_responses.PATH: responses_create,
    }
    for path, endpoint in fronts.items():
        app.router.add_route(path, endpoint, methods=["POST"])
    app.add_api_route("/v1/models", list_models, methods=["GET"], response_model=None)
    app.router.add_route("/v1/models/{model_id:path}", retrieve_model, methods=["GET"])
    app.add_api_route("/healthz", health, methods=["GET"], response_model=None)
    app.state.metrics_token = config.metrics_token
    app.router.add_route("/metrics", metrics_endpoint, methods=["GET"])
    app.include_router(build_router())
    app.include_router(build_dashboard(services_of))
    mount_static(app)
    # Innermost: POST to a front is answered without the framework's routing.
    app.add_middleware(FrontRoutes, routes=fronts, handlers=app.exception_handlers)
    policy = browser_policy(config, bind_host, lambda: app.state.services)
    app.add_middleware(BrowserGuard, policy=lambda: policy)
    # Outermost: refusals by the guard get a request id too.
    app.add_middleware(TelemetryMiddleware, fronts=FRONT_PATHS)
    return app
