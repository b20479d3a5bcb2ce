"""Apply an action's credentials to a rendered request (README, "Execution engine").

Credential fields are templates (usually ``{{secrets.NAME}}``); every variable in them is
required. :func:`apply_auth` renders them, sets the header or query parameter, and hands every
value it produced, derived forms included (Basic's base64, an OAuth access token), to a
``secret_sink`` so the caller's redactor masks them everywhere.

:class:`OAuthTokens` caches OAuth 2.0 client-credentials tokens per process, keyed by
``(token_url, client_id, scope)``, with one refresh at a time per key. Token requests go through
an injected :data:`TokenSender` so they share the executor's outbound client and egress guard.
Every failure to get a token is an :class:`AuthError` whose ``outcome`` says how the call ends: a
token endpoint the egress guard refuses is ``blocked``, one that does not answer in time
``timeout``, one that cannot be reached or gives a bad answer ``connect_error``. Callers waiting on
a refresh that failed share its error instead of trying again one after the other.

:func:`secret_forms` lists what the templates made of each secret (``{{ secrets.KEY | upper }}``
renders a value that is not the secret itself), so the redactor can mask those forms too.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import math
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote, quote_plus, urlencode, urlsplit

from jinja2.exceptions import TemplateError

from gateway.definitions.actions import (
    ApiKeyAuth,
    Auth,
    BasicAuth,
    BearerAuth,
    HeadersAuth,
    HttpRequest,
    NoAuth,
    OAuth2ClientCredentials,
)
from gateway.definitions.templating import TemplateProblem, analyze, is_empty, lookup, render
from gateway.engine.rendering import RenderedRequest, check_header_value, render_request
from gateway.errors import (
    ActionGateError,
    EgressBlocked,
    ExecutionRefused,
    HeaderValueError,
    MissingVariableError,
)
from gateway.net.outbound import ConnectFailed

__all__ = [
    "DEFAULT_LIFETIME_S",
    "REFRESH_MARGIN_S",
    "AuthError",
    "ClientAuth",
    "OAuthTokens",
    "TokenFailure",
    "TokenSender",
    "apply_auth",
    "bearer_token",
    "secret_forms",
]

TokenSender = Callable[[str, dict[str, str], bytes], Awaitable[tuple[int, bytes]]]
"""``(url, headers, body) -> (status, body)``: POSTs a token request through the executor."""

ClientAuth = Literal["client_secret_basic", "client_secret_post"]
TokenFailure = Literal["connect_error", "blocked", "timeout"]
"""The outcome of an execution whose OAuth token could not be had."""

# RFC 6749 §5.2 error codes: a fixed vocabulary, safe to repeat (free text might echo secrets).
_OAUTH_ERROR = re.compile(
    r"invalid_(request|client|grant|scope)|unauthorized_client|unsupported_grant_type"
)
DEFAULT_LIFETIME_S = 300.0
"""Lifetime assumed for a token whose answer has no ``expires_in``."""
REFRESH_MARGIN_S = 30.0
"""A token is replaced this long before it expires (at most half its lifetime)."""

_VSCHAR = re.compile(r"[\x20-\x7e]+")  # RFC 6749 Appendix A.12: access-token = 1*VSCHAR
_TAG = re.compile(r"\{\{.*?\}\}", re.S)


class AuthError(ActionGateError):
    """The token endpoint did not issue a usable token.

    The message names the token URL's host and the status, never the client secret or the
    response body (a misbehaving endpoint may echo credentials). ``outcome`` is the outcome of
    the execution that needed the token.
    """

    def __init__(
        self,
        host: str,
        reason: str,
        status: int | None = None,
        *,
        outcome: TokenFailure = "connect_error",
    ) -> None:
        self.host = host
        self.status = status
        self.reason = reason
        self.outcome: TokenFailure = outcome
        super().__init__(f"OAuth token request to {host} failed: {reason}")


def _require(templates: Iterable[str], values: Mapping[str, Any]) -> None:
    variables = set().union(*(analyze(t).variables for t in templates))
    missing = sorted(v for v in variables if is_empty(lookup(values, v)))
    if missing:
        raise MissingVariableError(missing[0])


def _header(name: str, template: str, values: Mapping[str, Any]) -> str:
    try:
        value = render(template, values, "header")
    except HeaderValueError as e:
        raise HeaderValueError(name, str(e).split(": ", 1)[-1]) from None
    return check_header_value(name, value)


def _set_header(request: RenderedRequest, name: str, value: str) -> None:
    # Auth wins over a same-named header from the definition, whatever its case.
    for existing in [k for k in request.headers if k.lower() == name.lower()]:
        del request.headers[existing]
    request.headers[name] = value


def _add_query(request: RenderedRequest, name: str, value: str) -> None:
    # Rendered URLs carry no fragment, so the pair goes at the very end.
    sep = "?" if "?" not in request.url else "" if request.url.endswith(("?", "&")) else "&"
    request.url += f"{sep}{quote(name, safe='')}={quote(value, safe='')}"
    request.query.append((name, value))


def _basic(username: str, password: str) -> str:
    return base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


async def apply_auth(
    auth: Auth | None,
    request: RenderedRequest,
    values: Mapping[str, Any],
    *,
    oauth: OAuthTokens,
    secret_sink: Callable[[str], None],
) -> None:
    """Add ``auth``'s credentials to ``request`` in place.

    Raises:
        MissingVariableError: a variable in a credential field is missing or empty.
        HeaderValueError: a credential would put control characters in a header.
        AuthError: the OAuth token endpoint did not issue a usable token.
    """
    if auth is None or isinstance(auth, NoAuth):
        return
    if isinstance(auth, BearerAuth):
        _require([auth.token], values)
        token = _header("Authorization", auth.token, values)
        secret_sink(token)
        _set_header(request, "Authorization", f"Bearer {token}")
    elif isinstance(auth, ApiKeyAuth):
        _require([auth.value], values)
        if auth.in_ == "header":
            value = _header(auth.name, auth.value, values)
            _set_header(request, auth.name, value)
        else:
            value = render(auth.value, values, "raw")
            _add_query(request, auth.name, value)
        secret_sink(value)
    elif isinstance(auth, BasicAuth):
        _require([auth.username, auth.password], values)
        username = render(auth.username, values, "raw")
        password = render(auth.password, values, "raw")
        if ":" in username:
            raise ExecutionRefused("a Basic auth username may not contain ':' (RFC 7617)")
        encoded = _basic(username, password)
        # A literal username ("api", "admin") is no secret; masking it would mangle every log.
        templated = bool(analyze(auth.username).variables)
        for value in (username if templated else "", password, f"{username}:{password}", encoded):
            if value:
                secret_sink(value)
        _set_header(request, "Authorization", f"Basic {encoded}")
    elif isinstance(auth, HeadersAuth):
        _require(auth.headers.values(), values)
        for name, template in auth.headers.items():
            value = _header(name, template, values)
            secret_sink(value)
            _set_header(request, name, value)
    elif isinstance(auth, OAuth2ClientCredentials):
        token = await oauth.token(auth, values, secret_sink=secret_sink)
        _set_header(request, "Authorization", f"Bearer {token}")


def bearer_token(request: RenderedRequest) -> str | None:
    """The token in a request's ``Authorization: Bearer`` header (to ``invalidate`` on a 401)."""
    for name, value in request.headers.items():
        scheme, _, token = value.partition(" ")
        if name.lower() == "authorization" and scheme.lower() == "bearer":
            return token
    return None


# --- what the templates make of a secret ---------------------------------------------------


def _templates(request: HttpRequest) -> Iterable[str]:
    """Every template of a request: URL, headers, query, body (keys and leaves), auth fields."""
    yield request.url
    yield from request.headers.keys()
    yield from request.headers.values()
    yield from request.query.values()
    stack = [request.body]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            yield node
        elif isinstance(node, dict):
            yield from (k for k in node if isinstance(k, str))
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    auth = request.auth
    if auth is not None:
        for name in type(auth).model_fields:
            value = getattr(auth, name)
            if isinstance(value, str) and name != "type":
                yield value
            elif isinstance(value, dict):
                yield from (v for v in value.values() if isinstance(v, str))


@functools.lru_cache(maxsize=4096)
def _secret_tags(template: str) -> tuple[tuple[str, frozenset[str]], ...]:
    """The tags of ``template`` that transform a secret, with their variables.

    A bare ``{{ secrets.KEY }}`` is left out: the secret itself is registered already.
    """
    if "secrets" not in template:
        return ()
    tags = []
    for tag in _TAG.findall(template):
        try:
            info = analyze(tag)
        except TemplateProblem:
            continue  # refused at save time; rendering it fails the request anyway
        if info.single is None and any(v.startswith("secrets.") for v in info.variables):
            tags.append((tag, info.variables))
    return tuple(tags)


def secret_forms(request: HttpRequest, values: Mapping[str, Any]) -> list[str]:
    """What the request's templates render from secrets through filters (``| upper``, ...).

    Each tag is rendered alone, exactly as the request renders it, so every filter (and chain of
    filters) is covered without a list of what each one does.
    """
    forms: list[str] = []
    for template in _templates(request):
        for tag, variables in _secret_tags(template):
            if any(lookup(values, v) is None for v in variables):
                continue
            try:
                forms.append(render(tag, values, "raw"))
            except (TemplateError, TypeError, ValueError):
                continue  # the request's own rendering reports it
    return forms


# --- OAuth 2.0 client credentials ------------------------------------------------------------


@dataclass(slots=True)
class _Slot:
    """One cache key: its token, its lock and the outcome of its last refresh."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    token: str | None = None
    refresh_at: float = 0.0
    refreshes: int = 0
    """Refreshes completed, so a waiter can tell that the one it waited for has failed."""
    failure: AuthError | None = None


class OAuthTokens:
    """Per-process cache of client-credentials tokens, refreshed one at a time per key.

    Args:
        sender: POSTs the token request (through the executor's client and egress guard).
        clock: monotonic seconds; injectable for tests.
        client_auth: ``client_secret_basic`` (HTTP Basic, the RFC 6749 default) or
            ``client_secret_post`` (credentials in the form body).
    """

    def __init__(
        self,
        sender: TokenSender,
        *,
        clock: Callable[[], float] = time.monotonic,
        client_auth: ClientAuth = "client_secret_basic",
    ) -> None:
        self._send = sender
        self._clock = clock
        self._client_auth = client_auth
        self._slots: dict[tuple[str, ...], _Slot] = {}

    async def token(
        self,
        auth: OAuth2ClientCredentials,
        values: Mapping[str, Any],
        *,
        secret_sink: Callable[[str], None] | None = None,
    ) -> str:
        """Return a valid access token, requesting one only when none is cached and fresh.

        Raises:
            MissingVariableError: a variable in ``auth`` is missing or empty.
            AuthError: the token endpoint did not issue a usable token.
        """
        url, client_id, secret, scope = _render_client(auth, values)
        sink = secret_sink or (lambda _: None)
        sink(secret)
        sink(_client_basic(client_id, secret))
        slot = self._slots.setdefault((url, client_id, scope), _Slot())
        seen = slot.refreshes
        async with slot.lock:
            if slot.token is None or self._clock() >= slot.refresh_at:
                if slot.refreshes != seen and (failed := slot.failure) is not None:
                    # The refresh this caller waited for failed: share its error, don't hammer.
                    raise AuthError(
                        failed.host, failed.reason, failed.status, outcome=failed.outcome
                    )
                slot.token, slot.failure = None, None
                try:
                    slot.token, lifetime = await self._request(url, client_id, secret, scope)
                except AuthError as e:
                    slot.failure = e
                    raise
                finally:
                    slot.refreshes += 1
                slot.refresh_at = self._clock() + lifetime - min(REFRESH_MARGIN_S, lifetime / 2)
            token = slot.token
        sink(token)
        return token

    async def invalidate(
        self, auth: OAuth2ClientCredentials, values: Mapping[str, Any], stale_token: str
    ) -> None:
        """Forget ``stale_token`` after a 401, unless another caller has already replaced it."""
        url, client_id, _, scope = _render_client(auth, values)
        slot = self._slots.get((url, client_id, scope))
        if slot is not None and slot.token == stale_token:
            slot.token = None

    async def _request(
        self, url: str, client_id: str, secret: str, scope: str
    ) -> tuple[str, float]:
        form = {"grant_type": "client_credentials"}
        if scope:
            form["scope"] = scope
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "Accept": "application/json",
        }
        if self._client_auth == "client_secret_basic":
            headers["Authorization"] = f"Basic {_client_basic(client_id, secret)}"
        else:
            form |= {"client_id": client_id, "client_secret": secret}
        host = urlsplit(url).hostname or "the token endpoint"
        status, body = await self._post(host, url, headers, urlencode(form).encode("ascii"))
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        data = data if isinstance(data, dict) else {}
        if status != 200:
            code = data.get("error")
            known = isinstance(code, str) and _OAUTH_ERROR.fullmatch(code)
            raise AuthError(host, f"HTTP {status}" + (f" ({code})" if known else ""), status)
        token = data.get("access_token")
        if not data:
            raise AuthError(host, "the answer is not a JSON object", status)
        if not isinstance(token, str) or not _VSCHAR.fullmatch(token):
            raise AuthError(host, "the answer has no valid access_token", status)
        token_type = data.get("token_type", "bearer")
        if not isinstance(token_type, str) or token_type.lower() != "bearer":
            raise AuthError(host, "the token is not a bearer token", status)
        try:
            lifetime = float(data.get("expires_in", DEFAULT_LIFETIME_S))
        except (TypeError, ValueError):
            lifetime = DEFAULT_LIFETIME_S
        return token, lifetime if 0 < lifetime < math.inf else DEFAULT_LIFETIME_S

    async def _post(
        self, host: str, url: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, bytes]:
        """Send the token request; a failure to get any answer is an :class:`AuthError`."""
        try:
            return await self._send(url, headers, body)
        except EgressBlocked as e:
            raise AuthError(host, f"blocked: {e.reason}", outcome="blocked") from None
        except TimeoutError:
            raise AuthError(host, "no answer in time", outcome="timeout") from None
        except ConnectFailed as e:
            raise AuthError(host, str(e)) from None


def _render_client(
    auth: OAuth2ClientCredentials, values: Mapping[str, Any]
) -> tuple[str, str, str, str]:
    """``(token_url, client_id, client_secret, scope)`` rendered; ``scope`` may be empty."""
    scope = auth.scope or ""
    _require([auth.token_url, auth.client_id, auth.client_secret, scope], values)
    url = render_request(HttpRequest(method="POST", url=auth.token_url), values).url
    client_id, secret, scope = (
        render(f, values, "raw") for f in (auth.client_id, auth.client_secret, scope)
    )
    return url, client_id, secret, scope


def _client_basic(client_id: str, secret: str) -> str:
    # RFC 6749 §2.3.1: form-urlencode id and secret before joining them for Basic.
    return _basic(quote_plus(client_id, safe=""), quote_plus(secret, safe=""))
