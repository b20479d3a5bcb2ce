"""The one outbound HTTP client every outgoing call goes through (actions, token refresh, tests).

Built on :mod:`gateway.net.http1` (keep-alive HTTP/1.1 over httptools; ``bench/bench_client.py``
measures it against aiohttp and httpx under concurrency) with:

- the egress guard's resolution, so sockets connect only to addresses that were checked;
- an overall deadline per call (retries and body reading included: a server that drips bytes
  cannot outlive it) and a separate connect timeout;
- retries for idempotent methods on connection errors, 429 and 502/503/504, with full-jitter
  backoff honouring ``Retry-After`` when it fits in the deadline; non-idempotent methods are
  retried only when the connection was never made, so the request cannot have been seen;
- redirects never followed; no cookie jar (customers must never share cookies); ``trust_env``
  off (no proxy or netrc from the environment);
- a raw response size cap counted on the wire, and gzip/deflate decoded by us with the same cap,
  so a decompression bomb stops at the limit. Stacked codings (``gzip, gzip``) are decoded layer
  by layer, each layer under the cap, at most :data:`MAX_CONTENT_CODINGS` of them; a coding the
  gateway did not offer, more layers than that, or a body that does not decode raise
  :class:`UndecodableBody` instead of handing compressed bytes on as if they were text.

:attr:`Outbound.hook` lets recording (:mod:`gateway.replay.recording`) and replay
(:mod:`gateway.replay.run`) see or answer every call after the host-name check; it is None in
normal operation.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
import zlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from yarl import URL

from gateway.net.egress import EgressPolicy, Lookup
from gateway.net.http1 import Http1ConnectError, Http1Error, Http1Pool

__all__ = [
    "DEFAULT_MAX_BODY",
    "MAX_CONTENT_CODINGS",
    "ConnectFailed",
    "Outbound",
    "OutboundCall",
    "OutboundHook",
    "OutboundResponse",
    "SendFn",
    "UndecodableBody",
]

DEFAULT_MAX_BODY = 1 << 20
RETRY_STATUSES = frozenset({429, 502, 503, 504})
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
USER_AGENT = "actiongate/0.1"
_BACKOFF_BASE_S = 0.2
MAX_CONTENT_CODINGS = 8
"""Most content-coding layers decoded; each is capped, so memory stays at twice the cap."""
_GZIP = "gzip"


class ConnectFailed(Exception):
    """No response: the connection failed, was reset or closed early."""


class UndecodableBody(ConnectFailed):
    """A response came, but its body cannot be decoded (``status`` is the HTTP status).

    A :class:`ConnectFailed` for everything that only knows "no usable response" (recording,
    the token cache); the executor tells it apart.
    """

    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        self.reason = reason
        super().__init__(f"the response body could not be decoded: {reason}")


@dataclass(frozen=True, slots=True)
class OutboundCall:
    """One request to send: what the executor, the OAuth token cache, recording and replay pass."""

    method: str
    url: str
    """Already rendered and percent-encoded; sent as it is."""
    headers: Mapping[str, str]
    body: bytes | None
    deadline: float
    """The event-loop time by which every attempt must be over."""
    attempts: int = 1
    """How many tries in all (retries happen only where they are safe for the method)."""

    @property
    def host(self) -> str:
        """The destination host, as the egress guard checks it."""
        return URL(self.url).raw_host or ""


@dataclass(slots=True)
class OutboundResponse:
    """What came back from one call (after any retries)."""

    status: int
    headers: dict[str, str]
    """Response headers, names lower-cased."""
    body: bytes
    truncated: bool
    """True when the body was cut at the size cap (on the wire or after decoding)."""
    attempts: int


SendFn = Callable[[OutboundCall], Awaitable[OutboundResponse]]
"""``Outbound._send``: sends one call, past the hook."""


class OutboundHook(Protocol):
    """Sees every outbound call: may pass it on through ``send`` (recording) or answer it."""

    async def send(self, call: OutboundCall, send: SendFn) -> OutboundResponse:
        """Answer one call; raises what :meth:`Outbound.send` raises."""
        ...


def _retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait according to a ``Retry-After`` header (delay or HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.fromtimestamp(now, UTC)).total_seconds())


def _codings(header: str) -> list[str]:
    """The content codings in the order they were applied, ``identity`` left out."""
    codings = [c.strip().lower() for c in header.split(",")]
    return [_GZIP if c == "x-gzip" else c for c in codings if c and c != "identity"]


def _inflate(data: bytes, coding: str, cap: int) -> tuple[bytes, bool] | None:
    """Undo one coding with an output cap; ``(body, cut)``, or None if it does not decode."""
    # deflate is zlib-wrapped by the RFC, but some servers send it raw.
    for wbits in (31,) if coding == _GZIP else (15, -15):
        decoder = zlib.decompressobj(wbits=wbits)
        try:
            out = decoder.decompress(data, cap)
        except zlib.error:
            continue
        return out, bool(decoder.unconsumed_tail) or (len(out) >= cap and not decoder.eof)
    return None


def _decode(raw: bytes, status: int, header: str, cap: int) -> tuple[bytes, bool]:
    """Decode every content coding, last applied first, each under ``cap``; ``(body, cut)``.

    Raises:
        UndecodableBody: an unsupported coding, too many layers, or data that does not decode.
    """
    codings = _codings(header)
    if not raw or not codings:
        return raw, False  # a HEAD answer or an empty body may carry the header, but no data
    if len(codings) > MAX_CONTENT_CODINGS:
        raise UndecodableBody(
            status, f"{len(codings)} content codings (at most {MAX_CONTENT_CODINGS} are decoded)"
        )
    for coding in codings:
        if coding not in (_GZIP, "deflate"):
            raise UndecodableBody(status, f"unsupported content coding {coding[:32]!r}")
    body, cut = raw, False
    for coding in reversed(codings):
        layer = _inflate(body, coding, cap)
        if layer is None:
            raise UndecodableBody(status, f"the body is not valid {coding} data")
        body, layer_cut = layer
        cut = cut or layer_cut
    return body, cut


class Outbound:
    """Shared connection pool with the guard, deadlines, retries and size caps."""

    def __init__(
        self,
        policy: EgressPolicy,
        *,
        max_body_bytes: int = DEFAULT_MAX_BODY,
        connect_timeout_s: float = 5.0,
        max_connections: int = 200,
        lookup: Lookup | None = None,
    ) -> None:
        self.policy = policy
        self.max_body_bytes = max_body_bytes
        self._connect_timeout = connect_timeout_s
        self._max_connections = max_connections
        self._lookup = lookup
        self._pool: Http1Pool | None = None
        self.hook: OutboundHook | None = None
        """Recording or replay interception (:mod:`gateway.replay.recording`,
        :mod:`gateway.replay.run`)."""

    def _ensure_pool(self) -> Http1Pool:
        if self._pool is None:
            self._pool = Http1Pool(max_connections=self._max_connections, resolve=self._checked)
        return self._pool

    async def _checked(self, host: str, port: int) -> list[str]:
        """The addresses the guard allows for ``host``; the pool connects to nothing else."""
        return [str(a) for a in await self.policy.resolve(host, port, lookup=self._lookup)]

    async def close(self) -> None:
        """Close the pool and its connections."""
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def send(self, call: OutboundCall) -> OutboundResponse:
        """Send a request, retrying within ``call.deadline`` (an event-loop time).

        Raises:
            EgressBlocked: the destination is not allowed.
            TimeoutError: the deadline passed.
            UndecodableBody: a response came, but its body cannot be decoded.
            ConnectFailed: no response could be had.
        """
        self.policy.check_url(call.url)
        if self.hook is not None:
            return await self.hook.send(call, self._send)
        return await self._send(call)

    async def _send(self, call: OutboundCall) -> OutboundResponse:
        host, deadline, attempts = call.host, call.deadline, call.attempts
        idempotent = call.method.upper() in IDEMPOTENT
        attempt = 0
        while True:
            attempt += 1
            last = attempt >= attempts
            try:
                response = await self._once(call)
            except Http1ConnectError as e:
                # Never connected: the server cannot have seen the request, any method may retry.
                if last or not await self._backoff(attempt, deadline, None):
                    raise ConnectFailed(str(e)) from e
                continue
            except (Http1Error, ConnectionError) as e:
                if last or not idempotent or not await self._backoff(attempt, deadline, None):
                    raise ConnectFailed(f"connection to {host} failed: {type(e).__name__}") from e
                continue
            response.attempts = attempt
            if response.status in RETRY_STATUSES and idempotent and not last:
                wait = _retry_after(response.headers.get("retry-after"), time.time())
                if await self._backoff(attempt, deadline, wait):
                    continue
            return response

    @staticmethod
    async def _backoff(attempt: int, deadline: float, wait: float | None) -> bool:
        """Sleep before the next attempt; False when that would pass the deadline."""
        if wait is None:
            wait = random.uniform(0, _BACKOFF_BASE_S * 2 ** (attempt - 1))  # noqa: S311
        if asyncio.get_running_loop().time() + wait >= deadline:
            return False
        await asyncio.sleep(wait)
        return True

    async def _once(self, call: OutboundCall) -> OutboundResponse:
        cap = self.max_body_bytes
        try:
            resp = await self._ensure_pool().request(
                call.method,
                call.url,
                call.headers,
                call.body,
                connect_timeout=self._connect_timeout,
                decode=False,
                deadline=call.deadline,
            )
        except ValueError as e:  # a rendered header or URL that cannot go on the wire
            raise ConnectFailed(f"the request to {call.host} cannot be sent: {e}") from None
        try:
            raw = bytearray()
            truncated = False
            while chunk := await resp.read_some():
                room = cap - len(raw)
                if len(chunk) > room:
                    raw += chunk[:room]
                    truncated = True
                    resp.close()  # do not read (or reuse) the rest of an oversized stream
                    break
                raw += chunk
        finally:
            resp.release()
        data, cut = _decode(bytes(raw), resp.status, resp.headers.get("content-encoding", ""), cap)
        return OutboundResponse(resp.status, dict(resp.headers), data, truncated or cut, 1)

    async def post_form(self, url: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        """POST a form (OAuth token requests) through the same guard, with a 10 s deadline."""
        deadline = asyncio.get_running_loop().time() + 10.0
        headers = {**headers, "Content-Type": "application/x-www-form-urlencoded"}
        response = await self.send(OutboundCall("POST", url, headers, body, deadline))
        return response.status, response.body
