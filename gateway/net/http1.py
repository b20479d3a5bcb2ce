"""A lean HTTP/1.1 client: keep-alive connections per origin, the response parsed by httptools.

The upstream LLM API is called two or three times per proxied request, and aiohttp's client cost
about 190 µs of CPU per call here against 55 µs for this one (``bench/bench_client.py``): the
difference is most of a tool loop's budget. The wire parsing stays in a maintained library
(httptools, llhttp's Python binding, which uvicorn uses for the inbound side); this module adds
only what it needs around it:

- one request at a time per connection, connections kept alive per ``(scheme, host, port)`` and
  dropped when the server closes them, asks to (``Connection: close``), or a response was not
  read to its end (a cancelled or oversized exchange never leaves bytes for the next one);
- at most ``max_connections`` open at once (callers wait for one beyond that);
- TLS through :mod:`ssl` with the system's trust store and host-name check by default;
- a cap on the response head (:data:`MAX_HEAD`) and on a body read whole (``read(cap)``), and
  reading paused while more than :data:`HIGH_WATER` bytes wait for a slow consumer;
- ``gzip``/``deflate`` decoded incrementally, under the caller's cap (a decompression bomb stops
  there); any other content coding is an error, never handed on as text;
- header names and values with CR, LF or NUL refused before anything is sent.

Errors: :class:`Http1Error` (a :class:`ConnectionError`) for a connection that could not be
made, broke, or sent something that is not HTTP/1.1; :class:`BodyTooLarge` for a cap. Deadlines
belong to the caller (``asyncio.timeout``); a cancelled exchange closes its connection.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import ssl
import zlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Final, cast
from urllib.parse import urlsplit

import httptools

__all__ = [
    "HIGH_WATER",
    "KEEPALIVE_S",
    "MAX_HEAD",
    "BodyTooLarge",
    "HeaderBlock",
    "Http1ConnectError",
    "Http1Error",
    "Http1Pool",
    "Http1Response",
]

MAX_HEAD: Final = 64 * 1024
"""Most bytes of a response's status line and headers."""
HIGH_WATER: Final = 1 << 20
"""Reading from the socket pauses while more than this waits unread."""
KEEPALIVE_S: Final = 15.0
"""An idle connection is not reused after this long (servers close theirs; aiohttp's value)."""
_USER_AGENT: Final = "User-Agent: actiongate/0.1"
_BAD_HEADER_CHARS: Final = frozenset("\r\n\x00")
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


class Http1Error(ConnectionError):
    """The connection could not be made, broke, or the peer did not speak HTTP/1.1."""


class Http1ConnectError(Http1Error):
    """No connection could be made: the server cannot have seen the request."""


class BodyTooLarge(Exception):
    """A body was larger than the caller's cap."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection; ``begin`` resets it for the next exchange."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reusable = False
        self.active = False
        self.head_request = False
        self._extra = False
        self._timer: asyncio.TimerHandle | None = None
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[None] | None = None
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._paused = False
        self._head_bytes = 0
        self._header_list: list[tuple[bytes, bytes]] = []
        self.status = 0
        self.headers: dict[str, str] = {}
        self.headers_done = False
        self.complete = False
        self.error: Exception | None = None

    # -- the exchange, driven by Http1Response --------------------------------------------
    def begin(self, head_request: bool, deadline: float | None) -> None:
        self.head_request = head_request
        self.active = True
        self._extra = False
        if deadline is not None:
            self._timer = self.loop.call_at(deadline, self._expire)
        self._chunks.clear()
        self._buffered = self._head_bytes = 0
        self._header_list = []
        self.status, self.headers = 0, {}
        self.headers_done = self.complete = self.reusable = False
        self.error = None

    async def wait(self) -> None:
        """Until something new arrived (head, body, end or error)."""
        waiter = self._waiter = self.loop.create_future()
        try:
            await waiter
        finally:
            self._waiter = None

    @property
    def unread(self) -> bool:
        """Body bytes received and not taken."""
        return bool(self._chunks)

    def take(self) -> bytes:
        """Every body byte received so far."""
        if not self._chunks:
            return b""
        data = self._chunks.popleft() if len(self._chunks) == 1 else b"".join(self._chunks)
        self._chunks.clear()
        self._buffered = 0
        if self._paused and self.transport is not None and not self.closed:
            self._paused = False
            self.transport.resume_reading()
        return data

    def end(self) -> None:
        """The exchange is over (its timer with it)."""
        self.active = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        self._fail(TimeoutError())

    def close(self) -> None:
        self.closed = True
        self.reusable = False
        if self.transport is not None:
            self.transport.abort()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- asyncio.Protocol ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if not self.active:  # bytes nobody asked for: the connection cannot be trusted
            self.close()
            return
        in_head = not self.headers_done
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as e:
            self._fail(Http1Error(f"the response is not valid HTTP/1.1 ({e})"))
            return
        if self._extra:  # a second response to one request: answered, but never reused
            self.close()
            return
        if in_head and not self.headers_done:
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD:
                self._fail(Http1Error(f"the response head is longer than {MAX_HEAD} bytes"))

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost settles the exchange

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        if not self.complete and self.error is None:
            if self.headers_done and self._delimited_by_close():
                self.complete = True
            else:
                self.error = Http1Error("the server closed the connection")
        self._wake()

    # -- httptools callbacks --------------------------------------------------------------------
    def on_message_begin(self) -> None:
        if self.complete:
            self._extra = True

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._extra:
            return
        self._header_list.append((name, value))
        if len(self._header_list) > 500:
            self._fail(Http1Error("the response has more than 500 header fields"))

    def on_headers_complete(self) -> None:
        if self._extra:
            return
        status = self._parser.get_status_code()
        if 100 <= status < 200:  # an interim response: the real one follows
            self._header_list = []
            return
        headers: dict[str, str] = {}
        for raw_name, raw_value in self._header_list:
            name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        self.status, self.headers, self.headers_done = status, headers, True
        if self.head_request:
            # httptools cannot be told that a HEAD answer has no body: the exchange ends here
            # and the connection is not reused.
            self.complete, self.reusable = True, False
        self._wake()

    def on_body(self, body: bytes) -> None:
        if self._extra:
            return
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if not self.headers_done or self.head_request or self._extra:
            return  # the end of an interim response
        self.complete = True
        self.reusable = self._parser.should_keep_alive()
        self._wake()

    def _delimited_by_close(self) -> bool:
        return "content-length" not in self.headers and "chunked" not in self.headers.get(
            "transfer-encoding", ""
        )

    def _fail(self, error: Exception) -> None:
        if self.error is None:
            self.error = error
        self.close()
        self._wake()


class Http1Response:
    """One response: status and headers at once, the body read whole or piece by piece.

    :meth:`release` (also after an error) gives the connection back when the body was read to
    its end and the server keeps it alive, and closes it otherwise.
    """

    def __init__(
        self, pool: Http1Pool, key: tuple[str, str, int], conn: _Connection, decode: bool
    ) -> None:
        self._pool, self._key, self._conn = pool, key, conn
        self.status = conn.status
        self.headers = conn.headers
        """Names lower-cased; repeated fields joined with ``", "``."""
        self._decoder = _decoder(conn.headers.get("content-encoding", "")) if decode else None
        self._released = False

    async def read_some(self) -> bytes:
        """The next decoded body bytes; ``b""`` at the end.

        Raises:
            Http1Error: the connection broke before the body's end.
        """
        conn = self._conn
        while True:
            data = conn.take()
            if data:
                if self._decoder is None:
                    return data
                try:
                    decoded = self._decoder.decompress(data)
                except zlib.error as e:
                    conn.close()
                    raise Http1Error(f"the response body does not decode ({e})") from None
                if decoded:
                    return decoded
                continue
            if conn.error is not None:
                raise conn.error
            if conn.complete:
                if self._decoder is not None:
                    tail, self._decoder = self._decoder.flush(), None
                    if tail:
                        return tail
                return b""
            await conn.wait()

    async def read(self, cap: int) -> bytes:
        """The whole decoded body.

        Raises:
            BodyTooLarge: it is longer than ``cap`` bytes (the connection is then closed).
            Http1Error: the connection broke before the body's end.
        """
        parts: list[bytes] = []
        size = 0
        while data := await self.read_some():
            size += len(data)
            if size > cap:
                self._conn.close()
                raise BodyTooLarge(f"the body is longer than {cap} bytes")
            parts.append(data)
        return b"".join(parts)

    def close(self) -> None:
        """Drop the connection, leaving the rest of the body unread."""
        self._conn.close()
        self.release()

    def release(self) -> None:
        """Give the connection back (or close it when it cannot carry another exchange)."""
        if self._released:
            return
        self._released = True
        self._pool._release(self._key, self._conn)


def _decoder(coding: str) -> zlib._Decompress | None:
    coding = coding.strip().lower()
    if coding in ("", "identity"):
        return None
    if coding in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if coding == "deflate":
        return zlib.decompressobj(zlib.MAX_WBITS)
    raise Http1Error(f"the response uses a content coding that was not offered: {coding!r}")


class Http1Pool:
    """Keep-alive HTTP/1.1 connections for one process, at most ``max_connections`` open."""

    def __init__(
        self,
        *,
        max_connections: int = 500,
        ssl_context: ssl.SSLContext | None = None,
        resolve: Resolve | None = None,
    ) -> None:
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._ssl = ssl_context
        self._resolve = resolve
        self._closed = False

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl

    async def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | HeaderBlock,
        body: bytes | None,
        *,
        connect_timeout: float = 10.0,
        decode: bool = True,
        deadline: float | None = None,
    ) -> Http1Response:
        """Send one request and wait for the response's head.

        ``url`` is sent as it is (already percent-encoded); ``body`` None sends no
        ``Content-Length`` on methods that take no body. ``decode`` False hands the body on in
        its content coding (the caller decodes, under its own cap). ``deadline`` (event-loop
        time) bounds the whole exchange, body included: when it passes, the connection is
        dropped and whatever waits on it raises :class:`TimeoutError` (a timer on the loop,
        not a cancellation, so it may span the caller's ``yield``).

        Raises:
            ValueError: the URL is not http(s), or a header cannot go on the wire (CR, LF or
                NUL, not Latin-1, or one this client sets: Host, Content-Length,
                Transfer-Encoding).
            Http1ConnectError: no connection could be made.
            Http1Error: no response head came (connection broken, not HTTP).
            TimeoutError: the deadline passed.
            Exception: whatever ``resolve`` raises (the egress guard's refusal).
        """
        key, head = _request_head(method, url, headers, body)
        body = body or b""
        loop = asyncio.get_running_loop()
        if deadline is not None:
            connect_timeout = min(connect_timeout, deadline - loop.time())
            if connect_timeout <= 0:
                raise TimeoutError
        if self._slots.locked() and deadline is not None:
            async with asyncio.timeout_at(deadline):
                await self._slots.acquire()
        else:
            await self._slots.acquire()
        conn: _Connection | None = None
        try:
            conn = await self._connection(key, connect_timeout)
            conn.begin(method == "HEAD", deadline)
            transport = conn.transport
            if transport is None or conn.closed:
                raise Http1Error("the connection closed before the request was sent")
            transport.write(head + body if len(body) < 65536 else head)
            if len(body) >= 65536:
                transport.write(body)
            while not conn.headers_done:
                if conn.error is not None:
                    raise conn.error
                await conn.wait()
            return Http1Response(self, key, conn, decode)
        except BaseException:
            if conn is not None:
                conn.end()
                conn.close()
            self._slots.release()
            raise

    async def _connection(self, key: tuple[str, str, int], connect_timeout: float) -> _Connection:
        loop = asyncio.get_running_loop()
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            if conn.closed or conn.transport is None or conn.transport.is_closing():
                continue  # the server hung up (its close may not have been reported yet)
            if loop.time() - conn.idle_since > KEEPALIVE_S:
                conn.close()
                continue
            return conn
        scheme, host, port = key
        tls = self._ssl_context() if scheme == "https" else None
        try:
            async with asyncio.timeout(connect_timeout):
                # Checked addresses only: connecting to them as numbers means nothing is looked
                # up twice, so a rebinding DNS answer cannot slip in between check and connect.
                addresses = await self._resolve(host, port) if self._resolve else [host]
                failure: OSError | None = None
                for address in addresses:
                    try:
                        _, conn = await loop.create_connection(
                            lambda: _Connection(loop),
                            address,
                            port,
                            ssl=tls,
                            server_hostname=host if tls else None,
                        )
                    except OSError as e:  # ssl.SSLError is one
                        failure = e
                        continue
                    return conn
        except TimeoutError:
            raise Http1ConnectError(f"cannot connect to {host}:{port}: timed out") from None
        except OSError as e:
            raise Http1ConnectError(f"cannot connect to {host}:{port}: {e}") from e
        raise Http1ConnectError(f"cannot connect to {host}:{port}: {failure or 'no address'}")

    def _release(self, key: tuple[str, str, int], conn: _Connection) -> None:
        self._slots.release()
        conn.end()
        # A body left unread cannot be reused: its bytes would open the next response.
        reusable = conn.complete and conn.reusable and not conn.unread and not conn.closed
        if reusable and not self._closed:
            conn.idle_since = conn.loop.time()
            self._idle.setdefault(key, []).append(conn)
            return
        conn.close()

    async def close(self) -> None:
        """Close every idle connection; connections in use close when released."""
        self._closed = True
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()


Resolve = Callable[[str, int], Awaitable[Sequence[str]]]
"""``(host, port)`` to the addresses to connect to, in order (the egress guard's check)."""

_CLIENT_HEADERS: Final = frozenset({"host", "content-length", "transfer-encoding"})
_NO_BODY_METHODS: Final = frozenset({"GET", "HEAD", "DELETE", "OPTIONS", "TRACE"})


@functools.lru_cache(maxsize=1024)
def _start(method: str, url: str) -> tuple[tuple[str, str, int], str]:
    """The pool key and the request line with ``Host`` (the same URLs come again and again)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        host, port = parts.hostname, parts.port
    except ValueError as e:
        raise ValueError(f"not a valid URL ({e})") from None
    if scheme not in _DEFAULT_PORTS or not host:
        raise ValueError(f"not an http(s) URL: {url[:200]!r}")
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise ValueError(f"the host name {host!r} is not a valid IDNA name") from None
    port = port or _DEFAULT_PORTS[scheme]
    authority = f"[{host}]" if ":" in host else host
    if port != _DEFAULT_PORTS[scheme]:
        authority = f"{authority}:{port}"
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if any(c <= " " or c == "\x7f" for c in target) or not method.isalpha():
        raise ValueError(f"the request line would not be valid: {method} {target!r}")
    return (scheme, host, port), f"{method} {target} HTTP/1.1\r\nHost: {authority}"


class HeaderBlock:
    """Request headers checked and joined once, for a caller that sends the same ones again
    and again (the upstream's); the defaults (``User-Agent``, ``Accept``, ``Accept-Encoding``)
    are added where the caller did not set them.

    Raises:
        ValueError: a name or value cannot go on the wire (CR, LF or NUL, not Latin-1, not a
            token), or it is one this client sets (Host, Content-Length, Transfer-Encoding).
    """

    __slots__ = ("text",)

    def __init__(self, headers: Mapping[str, str]) -> None:
        lines = []
        names = set()
        for name, value in headers.items():
            if _BAD_HEADER_CHARS.intersection(name) or _BAD_HEADER_CHARS.intersection(value):
                raise ValueError(f"the header {name[:64]!r} holds CR, LF or NUL")
            if not name or ":" in name or " " in name:
                raise ValueError(f"{name[:64]!r} is not a header name")
            lowered = name.lower()
            if lowered in _CLIENT_HEADERS:
                raise ValueError(f"the header {name!r} is set by the client, not the caller")
            names.add(lowered)
            lines.append(f"{name}: {value}\r\n")
        if "user-agent" not in names:
            lines.append(_USER_AGENT + "\r\n")
        if "accept" not in names:
            lines.append("Accept: */*\r\n")
        if "accept-encoding" not in names:
            lines.append("Accept-Encoding: gzip, deflate\r\n")
        self.text = "".join(lines)
        try:
            self.text.encode("latin-1")
        except UnicodeEncodeError:
            raise ValueError("a header holds characters outside Latin-1") from None


def _request_head(
    method: str, url: str, headers: Mapping[str, str] | HeaderBlock, body: bytes | None
) -> tuple[tuple[str, str, int], bytes]:
    key, start = _start(method, url)
    block = headers if isinstance(headers, HeaderBlock) else HeaderBlock(headers)
    length = (
        f"Content-Length: {len(body or b'')}\r\n"
        if body is not None or method not in _NO_BODY_METHODS
        else ""
    )
    try:
        head = f"{start}\r\n{block.text}{length}\r\n".encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError("the request line holds characters outside Latin-1") from None
    return key, head
