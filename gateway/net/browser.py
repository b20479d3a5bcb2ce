"""What a web page may do to the gateway: the Host, Origin and Content-Type rules, and CORS.

A browser lets any page send a "simple" cross-site request (a ``text/plain`` POST, a form post)
without asking first, and DNS rebinding lets a page on a name it controls read the answers of a
server on localhost or an intranet. Every request passes :class:`BrowserGuard` first:

1. **Host** — when an allow-list is in force (``allowed_hosts``; by default the loopback names
   when ``serve`` binds a loopback address), a request naming another host is answered 421:
   a rebound name never reaches a route.
2. **Origin** — a request that carries ``Origin`` (browsers send it on every cross-site request
   and every POST) is refused with 403 unless the origin is the gateway's own (same-origin: the
   dashboard and its Playground) or allowed: ``cors.allow_origins`` for every route family that
   speaks JSON, plus the agents' ``cors_origins`` for the proxy fronts and MCP. Allowed origins
   get real CORS: preflights answered for that origin only, ``Vary: Origin``, never ``*``.
   The dashboard stays same-origin only.
3. **Content-Type** — a body sent to ``/v1/*`` or ``/api/*`` must be ``application/json``
   (415 otherwise), so no request a page can send without a preflight runs anything.

For every allowed cross-site request the guard leaves a :class:`CrossOrigin` in the ASGI scope
under :data:`ORIGIN_SCOPE_KEY`. On ``/v1`` an agent-level origin is only a first gate (the page
names its agent in the body): the front checks the chosen agent's own ``cors_origins`` once it
knows the agent (:meth:`CrossOrigin.allows`), and a widget key is accepted only with one of them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "CORS_ALLOW_HEADERS",
    "LOOPBACK_HOSTS",
    "ORIGIN_SCOPE_KEY",
    "BrowserGuard",
    "BrowserPolicy",
    "CrossOrigin",
    "cross_origin_of",
    "default_allowed_hosts",
    "is_loopback_bind",
]

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
"""Host names a loopback-bound gateway answers to (any port)."""

ORIGIN_SCOPE_KEY = "actiongate.cross_origin"
"""Scope key: the :class:`CrossOrigin` of an allowed cross-site request."""

CORS_ALLOW_HEADERS = (
    "authorization",
    "content-type",
    "x-api-key",
    "anthropic-version",
    "x-conversation-id",
    "x-user-id",
    "x-channel",
    "x-actiongate-ui",
    "x-request-id",
    "traceparent",
    "tracestate",
)
"""Request headers the fronts read, which a cross-site page may send once allowed."""

_EXPOSE_HEADERS = "x-actiongate-conversation-id, x-request-id"
_METHODS = "GET, POST, OPTIONS"
_MAX_AGE = "600"
_JSON_FAMILIES = ("/v1/", "/api/")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_READ = {
    name.encode(): name
    for name in (
        "host",
        "origin",
        "content-type",
        "content-length",
        "transfer-encoding",
        "access-control-request-method",
    )
}
_MAX_REMEMBERED_HOSTS = 1024


def is_loopback_bind(host: str) -> bool:
    """Whether ``serve --host`` names a loopback address (or ``localhost``)."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def default_allowed_hosts(bind_host: str | None, configured: Sequence[str] | None) -> list[str]:
    """The Host allow-list in force: the configured one, else loopback names on loopback.

    An empty list means no Host check (a gateway bound to another address with no
    ``allowed_hosts``: ``serve`` warns about it).
    """
    if configured is not None:
        return list(configured)
    if bind_host is not None and is_loopback_bind(bind_host):
        return list(LOOPBACK_HOSTS)
    return []


def _split_host(value: str) -> tuple[str, str | None]:
    """``host[:port]`` as (lower-cased host, port or None); IPv6 stays in brackets."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return value, None
        rest = value[end + 1 :]
        return value[: end + 1], rest[1:] if rest.startswith(":") else None
    host, sep, port = value.rpartition(":")
    return (host, port) if sep and port.isdigit() else (value, None)


def host_allowed(host_header: str, allowed: Sequence[str]) -> bool:
    """Whether a ``Host`` header value matches the allow-list.

    Entries are host names or addresses (any port), ``host:port`` (that port only),
    ``*.example.com`` (any subdomain) or ``*`` (every host).
    """
    host, port = _split_host(host_header)
    if not host:
        return False
    for entry in allowed:
        if entry == "*":
            return True
        want_host, want_port = _split_host(entry)
        if want_port is not None and want_port != port:
            continue
        if want_host.startswith("*."):
            if host.endswith(want_host[1:]) and host != want_host[2:]:
                return True
        elif host == want_host:
            return True
    return False


def _normal_origin(origin: str) -> str:
    return origin.strip().rstrip("/").lower()


@dataclass(frozen=True, slots=True)
class BrowserPolicy:
    """The rules :class:`BrowserGuard` applies; built from the config at start-up."""

    allowed_hosts: Sequence[str] = ()
    """Empty: no Host check."""
    allow_origins: Collection[str] = ()
    """Origins allowed on the JSON routes (``/v1``, ``/api``, ``/mcp``)."""
    agent_origins: Callable[[str | None], Collection[str]] = lambda _agent: frozenset()
    """One agent's ``cors_origins`` (``None``: any agent's), read per request so admin edits
    apply at once."""
    error_body: Callable[[str, int, str, str], Any] = lambda _path, _status, message, code: {
        "error": {"message": message, "type": "invalid_request_error", "code": code}
    }
    """A JSON route's error body for ``(path, status, message, code)``: each front's shape."""


@dataclass(frozen=True, slots=True)
class CrossOrigin:
    """An allowed cross-site request's origin, as the fronts see it."""

    origin: str
    """Normalised (lower case, no trailing slash)."""
    everywhere: bool
    """Allowed by ``cors.allow_origins`` (not only by some agent's ``cors_origins``)."""

    def allows(self, cors_origins: Collection[str]) -> bool:
        """Whether this origin may use the agent whose ``cors_origins`` these are."""
        return self.everywhere or self.origin in cors_origins


def cross_origin_of(scope: Scope) -> CrossOrigin | None:
    """The :class:`CrossOrigin` the guard left in ``scope``, if the request is cross-site."""
    value = scope.get(ORIGIN_SCOPE_KEY)
    return value if isinstance(value, CrossOrigin) else None


class BrowserGuard:
    """ASGI middleware applying a :class:`BrowserPolicy` before any route runs."""

    def __init__(self, app: ASGIApp, policy: Callable[[], BrowserPolicy]) -> None:
        """Wrap ``app``.

        Args:
            app: The application.
            policy: Returns the policy in force (called per request).
        """
        self.app = app
        self._policy = policy
        self._cached_policy: BrowserPolicy | None = None
        self._host_verdicts: dict[str, bool] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        policy = self._policy()
        headers = _read_headers(scope)
        path: str = scope["path"]
        host = headers.get("host", "")
        if policy.allowed_hosts and not self._host_ok(policy, host):
            message = "this gateway does not answer to that Host (see allowed_hosts)"
            await _refuse(send, policy, path, 421, message, "misdirected_request")
            return
        origin = headers.get("origin")
        cors_origin: str | None = None
        if origin is not None and not self._same_origin(scope, origin, host):
            verdict = self._cross_origin(policy, path, origin)
            if verdict is None:
                message = "cross-origin requests from this origin are not allowed"
                await _refuse(send, policy, path, 403, message, "origin_not_allowed")
                return
            cors_origin = origin
            scope[ORIGIN_SCOPE_KEY] = CrossOrigin(_normal_origin(origin), verdict == "global")
            if scope["method"] == "OPTIONS" and "access-control-request-method" in headers:
                await _preflight(send, origin)
                return
        if path.startswith(_JSON_FAMILIES) and not _json_body_ok(scope["method"], headers):
            message = "the request body must be JSON (Content-Type: application/json)"
            await _refuse(send, policy, path, 415, message, "unsupported_media_type", cors_origin)
            return
        if cors_origin is None:
            await self.app(scope, receive, send)
            return
        await self.app(scope, receive, _with_cors(send, cors_origin))

    def _host_ok(self, policy: BrowserPolicy, host: str) -> bool:
        # Clients send the same few Host values: remember each verdict for this policy.
        if policy is not self._cached_policy:
            self._cached_policy, self._host_verdicts = policy, {}
        verdict = self._host_verdicts.get(host)
        if verdict is None:
            verdict = host_allowed(host, policy.allowed_hosts)
            if len(self._host_verdicts) < _MAX_REMEMBERED_HOSTS:
                self._host_verdicts[host] = verdict
        return verdict

    @staticmethod
    def _same_origin(scope: Scope, origin: str, host: str) -> bool:
        scheme = "https" if scope.get("scheme") == "https" else "http"
        return bool(host) and _normal_origin(origin) == f"{scheme}://{host.lower()}"

    @staticmethod
    def _cross_origin(policy: BrowserPolicy, path: str, origin: str) -> str | None:
        """``"global"``, ``"agent"`` (the front checks the agent) or None (refused)."""
        normal = _normal_origin(origin)
        if normal == "null":
            return None
        is_json = path.startswith(_JSON_FAMILIES) or path.startswith("/mcp/")
        if is_json and normal in {_normal_origin(o) for o in policy.allow_origins}:
            return "global"
        if path.startswith("/v1/"):
            agent: str | None = None  # named in the body: the front checks that agent
        elif path.startswith("/mcp/"):
            agent = path[5:].split("/", 1)[0]
        else:
            return None
        if normal in {_normal_origin(o) for o in policy.agent_origins(agent)}:
            return "agent"
        return None


def _read_headers(scope: Scope) -> dict[str, str]:
    """The few request headers the guard reads, in one pass (the first of each name)."""
    found: dict[str, str] = {}
    for raw_name, raw_value in scope["headers"]:
        name = raw_name.lower()
        if name in _READ and (key := _READ[name]) not in found:
            found[key] = raw_value.decode("latin-1")
    return found


def _json_body_ok(method: str, headers: Mapping[str, str]) -> bool:
    has_body = method in _BODY_METHODS and (
        headers.get("content-length", "0") not in ("", "0") or "transfer-encoding" in headers
    )
    if not has_body:
        return True
    ctype = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    return ctype == "application/json" or (
        ctype.startswith("application/") and ctype.endswith("+json")
    )


async def _refuse(
    send: Send,
    policy: BrowserPolicy,
    path: str,
    status: int,
    message: str,
    code: str,
    origin: str | None = None,
) -> None:
    """Answer in the route's error shape (the front's for the JSON routes, text otherwise)."""
    if path.startswith(_JSON_FAMILIES) or path.startswith("/mcp/"):
        body = orjson.dumps(policy.error_body(path, status, message, code))
        media = b"application/json"
    else:
        body, media = f"{message}\n".encode(), b"text/plain; charset=utf-8"
    headers = [(b"content-type", media), (b"content-length", str(len(body)).encode())]
    if origin is not None:
        headers += _cors_headers(origin)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _cors_headers(origin: str) -> list[tuple[bytes, bytes]]:
    return [
        (b"access-control-allow-origin", origin.encode("latin-1")),
        (b"access-control-expose-headers", _EXPOSE_HEADERS.encode()),
        (b"vary", b"Origin"),
    ]


async def _preflight(send: Send, origin: str) -> None:
    headers = [
        *_cors_headers(origin),
        (b"access-control-allow-methods", _METHODS.encode()),
        (b"access-control-allow-headers", ", ".join(CORS_ALLOW_HEADERS).encode()),
        (b"access-control-max-age", _MAX_AGE.encode()),
        (b"content-length", b"0"),
    ]
    await send({"type": "http.response.start", "status": 204, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


def _with_cors(send: Send, origin: str) -> Send:
    async def send_with_cors(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [
                (k, v)
                for k, v in message.get("headers", [])
                if not k.lower().startswith(b"access-control-") and k.lower() != b"vary"
            ]
            message = {**message, "headers": [*headers, *_cors_headers(origin)]}
        await send(message)

    return send_with_cors
