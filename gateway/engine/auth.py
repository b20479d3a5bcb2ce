"""Apply an action's credentials to a rendered request (README, "Execution engine").

Credential fields are templates (usually ``{{secrets.NAME}}``); every variable in them is
required. :func:`apply_auth` renders them, sets the header or query parameter, and hands every
value it produced, derived forms included (Basic's base64, an OAuth access token), to a
``secret_sink`` so the caller's redactor masks them everywhere.

:class:`OAuthTokens` caches OAuth 2.0 access tokens per process, from the client-credentials
grant or from a stored refresh token (an authorization-code app), keyed by ``(token_url,
client_id, scope[, refresh token secret])``, with one refresh at a time per key; a refresh token
the server rotates is stored back, encrypted, through a :class:`RefreshTokenStore`. Token
requests go through an injected :data:`TokenSender` so they share the executor's outbound client
and egress guard.
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
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol
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
    OAuth2RefreshToken,
    refresh_secret_name,
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
    "OAUTH_GRANTS",
    "REFRESH_MARGIN_S",
    "AuthError",
    "ClientAuth",
    "OAuthGrant",
    "OAuthTokens",
    "RefreshTokenStore",
    "TokenFailure",
    "TokenSender",
    "apply_auth",
    "bearer_token",
    "secret_forms",
]

logger = logging.getLogger("actiongate.auth")

OAuthGrant = OAuth2ClientCredentials | OAuth2RefreshToken
OAUTH_GRANTS = (OAuth2ClientCredentials, OAuth2RefreshToken)
"""Auth kinds whose bearer token the gateway fetches (and drops again after a 401)."""

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
    elif isinstance(auth, OAUTH_GRANTS):
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


# --- OAuth 2.0 tokens: client credentials and refresh tokens ---------------------------------


class RefreshTokenStore(Protocol):
    """Where refresh tokens live between refreshes: the encrypted secret store."""

    async def current(self, name: str) -> str | None:
        """The refresh token stored under secret ``name`` now (another replica may rotate it)."""

    async def rotate(self, name: str, value: str) -> None:
        """Store the token the server issued in place of the old one."""


@dataclass(slots=True)
class _Slot:
    """One cache key: its token, its lock and the outcome of its last refresh."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    token: str | None = None
    refresh_at: float = 0.0
    refreshes: int = 0
    """Refreshes completed, so a waiter can tell that the one it waited for has failed."""
    failure: AuthError | None = None
    refresh_token: str | None = None
    """The newest refresh token this process saw for the key (rotation without a store)."""


@dataclass(frozen=True, slots=True)
class _Client:
    """A rendered grant: where to ask, who asks, for what."""

    url: str
    client_id: str
    secret: str | None
    scope: str
    refresh_secret: str | None = None
    """For the refresh-token grant: the secret's name and (below) its rendered value."""
    refresh_token: str = ""

    @property
    def key(self) -> tuple[str, ...]:
        return (self.url, self.client_id, self.scope, self.refresh_secret or "")


class OAuthTokens:
    """Per-process cache of OAuth access tokens, refreshed one at a time per key.

    Client-credentials tokens are keyed by ``(token_url, client_id, scope)``; refresh-token
    grants also by the refresh token's secret name. A rotated refresh token (RFC 6749 §6: the
    server may issue a new one and revoke the old) is handed to :attr:`refresh_store`, which
    stores it encrypted; before each refresh the stored one is read again, so replicas that
    share the database follow each other's rotations.

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
        refresh_store: RefreshTokenStore | None = None,
    ) -> None:
        self._send = sender
        self._clock = clock
        self._client_auth = client_auth
        self._slots: dict[tuple[str, ...], _Slot] = {}
        self.refresh_store = refresh_store

    async def token(
        self,
        auth: OAuthGrant,
        values: Mapping[str, Any],
        *,
        secret_sink: Callable[[str], None] | None = None,
    ) -> str:
        """Return a valid access token, requesting one only when none is cached and fresh.

        Raises:
            MissingVariableError: a variable in ``auth`` is missing or empty.
            AuthError: the token endpoint did not issue a usable token.
        """
        client = _render_client(auth, values)
        sink = secret_sink or (lambda _: None)
        for value in (client.secret, client.refresh_token):
            if value:
                sink(value)
        if client.secret:
            sink(_client_basic(client.client_id, client.secret))
        slot = self._slots.setdefault(client.key, _Slot())
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
                    slot.token, lifetime = await self._fetch(client, slot, sink)
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
        self, auth: OAuthGrant, values: Mapping[str, Any], stale_token: str
    ) -> None:
        """Forget ``stale_token`` after a 401, unless another caller has already replaced it."""
        slot = self._slots.get(_render_client(auth, values).key)
        if slot is not None and slot.token == stale_token:
            slot.token = None

    async def _fetch(
        self, client: _Client, slot: _Slot, sink: Callable[[str], None]
    ) -> tuple[str, float]:
        if client.refresh_secret is None:
            form = {"grant_type": "client_credentials"}
            data = await self._grant(client, form)
            return _access_token(client, data)
        used = await self._refresh_token(client, slot)
        sink(used)
        try:
            data = await self._grant(client, {"grant_type": "refresh_token", "refresh_token": used})
        except AuthError as e:
            # Another replica may have rotated the token since it was read: try its new one once.
            newer = await self._stored(client)
            if e.status != 400 or newer is None or newer == used:
                raise
            sink(newer)
            used = newer
            data = await self._grant(client, {"grant_type": "refresh_token", "refresh_token": used})
        token = _access_token(client, data)
        slot.refresh_token = used
        await self._keep_rotated(client, slot, data.get("refresh_token"), used, sink)
        return token

    async def _refresh_token(self, client: _Client, slot: _Slot) -> str:
        """The newest refresh token known: the store's, else this process's, else the secret."""
        return await self._stored(client) or slot.refresh_token or client.refresh_token

    async def _stored(self, client: _Client) -> str | None:
        if self.refresh_store is None or client.refresh_secret is None:
            return None
        try:
            return await self.refresh_store.current(client.refresh_secret)
        except Exception:
            logger.exception("could not read secret %s", client.refresh_secret)
            return None

    async def _keep_rotated(
        self, client: _Client, slot: _Slot, issued: Any, used: str, sink: Callable[[str], None]
    ) -> None:
        """Keep a new refresh token: in this process at once, in the secret store encrypted."""
        if not isinstance(issued, str) or issued == used or not _VSCHAR.fullmatch(issued):
            return
        sink(issued)
        slot.refresh_token = issued
        name = client.refresh_secret
        assert name is not None
        if self.refresh_store is None:
            logger.warning(
                "the token endpoint rotated the refresh token in secret %s, but there is no "
                "secret store: the new token lives in this process only",
                name,
            )
            return
        try:
            await self.refresh_store.rotate(name, issued)
        except Exception:
            logger.exception(
                "could not store the rotated refresh token in secret %s; this process keeps "
                "using it, but after a restart the action needs a new authorization",
                name,
            )

    async def _grant(self, client: _Client, form: dict[str, str]) -> dict[str, Any]:
        """POST one token request; the answer's JSON object when it is a 200."""
        if client.scope:
            form["scope"] = client.scope
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "Accept": "application/json",
        }
        if client.secret is None:
            form["client_id"] = client.client_id  # a public client (RFC 6749 §3.2.1)
        elif self._client_auth == "client_secret_basic":
            headers["Authorization"] = f"Basic {_client_basic(client.client_id, client.secret)}"
        else:
            form |= {"client_id": client.client_id, "client_secret": client.secret}
        host = _host(client)
        status, body = await self._post(host, client.url, headers, urlencode(form).encode("ascii"))
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        data = data if isinstance(data, dict) else {}
        if status != 200:
            code = data.get("error")
            known = isinstance(code, str) and _OAUTH_ERROR.fullmatch(code)
            raise AuthError(host, f"HTTP {status}" + (f" ({code})" if known else ""), status)
        if not data:
            raise AuthError(host, "the answer is not a JSON object", status)
        return data

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


def _host(client: _Client) -> str:
    return urlsplit(client.url).hostname or "the token endpoint"


def _access_token(client: _Client, data: dict[str, Any]) -> tuple[str, float]:
    """``(access_token, lifetime_s)`` from a token answer (RFC 6749 §5.1)."""
    host = _host(client)
    token = data.get("access_token")
    if not isinstance(token, str) or not _VSCHAR.fullmatch(token):
        raise AuthError(host, "the answer has no valid access_token", 200)
    token_type = data.get("token_type", "bearer")
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        raise AuthError(host, "the token is not a bearer token", 200)
    try:
        lifetime = float(data.get("expires_in", DEFAULT_LIFETIME_S))
    except (TypeError, ValueError):
        lifetime = DEFAULT_LIFETIME_S
    return token, lifetime if 0 < lifetime < math.inf else DEFAULT_LIFETIME_S


def _render_client(auth: OAuthGrant, values: Mapping[str, Any]) -> _Client:
    """The grant's fields rendered; ``scope`` may be empty."""
    scope = auth.scope or ""
    secret_field = auth.client_secret or ""
    refresh_field = auth.refresh_token if isinstance(auth, OAuth2RefreshToken) else ""
    _require([auth.token_url, auth.client_id, secret_field, scope, refresh_field], values)
    url = render_request(HttpRequest(method="POST", url=auth.token_url), values).url
    client_id, secret, scope, refresh = (
        render(f, values, "raw") for f in (auth.client_id, secret_field, scope, refresh_field)
    )
    return _Client(
        url,
        client_id,
        secret if auth.client_secret is not None else None,
        scope,
        refresh_secret_name(refresh_field) if refresh_field else None,
        refresh,
    )


def _client_basic(client_id: str, secret: str) -> str:
    # RFC 6749 §2.3.1: form-urlencode id and secret before joining them for Basic.
    return _basic(quote_plus(client_id, safe=""), quote_plus(secret, safe=""))
