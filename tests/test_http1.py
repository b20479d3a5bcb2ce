"""The keep-alive HTTP/1.1 client (gateway/net/http1.py) against raw sockets that script the wire.

Each server here answers every request it reads with the next scripted reply (raw bytes, sent as
they are), and records the requests and how many connections it accepted, so reuse, framing and
refusals are checked on the bytes themselves.
"""

from __future__ import annotations

import asyncio
import gzip
import ssl
import subprocess
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gateway.net import http1
from gateway.net.http1 import (
    BodyTooLarge,
    HeaderBlock,
    Http1ConnectError,
    Http1Error,
    Http1Pool,
    Http1Response,
)


def ok(body: bytes, *extra: str) -> bytes:
    head = ["HTTP/1.1 200 OK", f"Content-Length: {len(body)}", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def chunked(*pieces: bytes, extra: tuple[str, ...] = ()) -> bytes:
    head = "\r\n".join(["HTTP/1.1 200 OK", "Transfer-Encoding: chunked", *extra]) + "\r\n\r\n"
    body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    return head.encode() + body


@dataclass
class Script:
    """Replies in order; a callable reply gets the writer (for slow or odd answers)."""

    replies: list[bytes | Callable[[asyncio.StreamWriter], object]]
    requests: list[bytes] = field(default_factory=list)
    connections: int = 0
    port: int = 0


async def _read_request(reader: asyncio.StreamReader) -> bytes | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head + (await reader.readexactly(length) if length else b"")


@asynccontextmanager
async def scripted(
    *replies: bytes | Callable[[asyncio.StreamWriter], object],
    tls: ssl.SSLContext | None = None,
) -> AsyncIterator[Script]:
    script = Script(list(replies))

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        script.connections += 1
        try:
            while script.replies and (request := await _read_request(reader)) is not None:
                script.requests.append(request)
                reply = script.replies.pop(0)
                if callable(reply):
                    result = reply(writer)
                    if asyncio.iscoroutine(result):
                        await result
                else:
                    writer.write(reply)
                    await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=tls)
    script.port = server.sockets[0].getsockname()[1]
    try:
        yield script
    finally:
        server.close()


async def fetch(pool: Http1Pool, url: str, method: str = "GET", **kw: object) -> tuple[int, bytes]:
    response = await pool.request(method, url, {}, None, **kw)  # type: ignore[arg-type]
    try:
        return response.status, await response.read(1 << 24)
    finally:
        response.release()


async def test_keep_alive_reuses_one_connection_and_frames_the_request() -> None:
    async with scripted(ok(b"one"), ok(b"two")) as server:
        pool = Http1Pool()
        url = f"http://127.0.0.1:{server.port}/v1/chat?x=1"
        response = await pool.request("POST", url, {"X-Key": "k"}, b'{"a":1}')
        assert (response.status, await response.read(100)) == (200, b"one")
        response.release()
        assert await fetch(pool, url) == (200, b"two")
        await pool.close()
    assert server.connections == 1
    post, get = server.requests
    assert post.startswith(b"POST /v1/chat?x=1 HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{server.port}\r\n".encode() in post
    assert b"X-Key: k\r\n" in post and b"Content-Length: 7\r\n" in post
    assert post.endswith(b'\r\n\r\n{"a":1}')
    assert b"Content-Length" not in get  # a GET without a body says nothing of one


async def test_chunked_and_gzip_bodies_are_decoded_piece_by_piece() -> None:
    packed = gzip.compress(b"hello " * 1000)
    pieces = [packed[i : i + 100] for i in range(0, len(packed), 100)]
    deflated = zlib.compress(b"deflated body")
    async with scripted(
        chunked(*pieces, extra=("Content-Encoding: gzip",)),
        ok(deflated, "Content-Encoding: deflate"),
        ok(packed, "Content-Encoding: gzip"),
    ) as server:
        pool = Http1Pool()
        url = f"http://127.0.0.1:{server.port}/"
        assert await fetch(pool, url) == (200, b"hello " * 1000)
        assert await fetch(pool, url) == (200, b"deflated body")
        response = await pool.request("GET", url, {}, None, decode=False)
        assert await response.read(1 << 20) == packed  # the caller decodes, under its own cap
        response.release()
        await pool.close()
    assert server.connections == 1


_HUGE_HEAD = ("\r\n".join(["HTTP/1.1 200 OK", *["X-Filler: " + "f" * 8000] * 10]) + "\r\n").encode()


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (ok(b"xx", "Content-Encoding: br"), "content coding that was not offered: 'br'"),
        (ok(b"not gzip at all", "Content-Encoding: gzip"), "does not decode"),
        (_HUGE_HEAD, "head is longer than 65536 bytes"),  # and it never ends
        (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", r"not valid HTTP/1\.1"),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "not valid",
        ),
    ],
    ids=["coding not offered", "body does not decode", "head too long", "not HTTP", "smuggling"],
)
async def test_a_reply_that_cannot_be_used_is_an_error_never_text(
    reply: bytes, message: str
) -> None:
    async with scripted(reply) as server:
        pool = Http1Pool()
        with pytest.raises(Http1Error, match=message):
            await fetch(pool, f"http://127.0.0.1:{server.port}/")
        await pool.close()


async def test_a_body_delimited_by_close_ends_at_eof_and_is_not_reused() -> None:
    async def close_delimited(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\npart one, ")
        await writer.drain()
        writer.write(b"part two")
        writer.close()

    async with scripted(close_delimited, ok(b"next")) as server:
        pool = Http1Pool()
        url = f"http://127.0.0.1:{server.port}/"
        assert await fetch(pool, url) == (200, b"part one, part two")
        assert await fetch(pool, url) == (200, b"next")
        await pool.close()
    assert server.connections == 2


async def test_a_connection_idle_past_the_keepalive_time_is_not_reused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(http1, "KEEPALIVE_S", 0.05)
    async with scripted(ok(b"a"), ok(b"b")) as server:
        pool = Http1Pool()
        url = f"http://127.0.0.1:{server.port}/"
        await fetch(pool, url)
        await asyncio.sleep(0.1)
        await fetch(pool, url)
        await pool.close()
    assert server.connections == 2


async def _leave_unread(response: Http1Response) -> None:
    pass  # released at once: the body's bytes must not open the next reply


async def _read_past_the_cap(response: Http1Response) -> None:
    with pytest.raises(BodyTooLarge, match="longer than 1000 bytes"):
        await response.read(1000)


@pytest.mark.parametrize("reader", [_leave_unread, _read_past_the_cap], ids=["unread", "over cap"])
async def test_a_body_not_read_to_its_end_closes_the_connection(
    reader: Callable[[Http1Response], Awaitable[None]],
) -> None:
    async with scripted(ok(b"x" * 10_000), ok(b"fresh")) as server:
        pool = Http1Pool()
        url = f"http://127.0.0.1:{server.port}/"
        response = await pool.request("GET", url, {}, None)
        await reader(response)
        response.release()
        assert await fetch(pool, url) == (200, b"fresh")
        await pool.close()
    assert server.connections == 2


async def test_a_cancelled_exchange_frees_its_slot_and_its_connection() -> None:
    async def never_answers(writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(10)

    async with scripted(never_answers, ok(b"after")) as server:
        pool = Http1Pool(max_connections=1)
        url = f"http://127.0.0.1:{server.port}/"
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await fetch(pool, url)
        # The only slot is free again, and the half-done connection was not kept.
        async with asyncio.timeout(2):
            assert await fetch(pool, url) == (200, b"after")
        await pool.close()
    assert server.connections == 2


async def test_max_connections_makes_callers_wait_for_a_slot() -> None:
    started = asyncio.Event()
    release = asyncio.Event()

    async def slow(writer: asyncio.StreamWriter) -> None:
        started.set()
        await release.wait()
        writer.write(ok(b"slow"))

    async with scripted(slow, ok(b"quick")) as server:
        pool = Http1Pool(max_connections=1)
        url = f"http://127.0.0.1:{server.port}/"
        first = asyncio.ensure_future(fetch(pool, url))
        await started.wait()
        second = asyncio.ensure_future(fetch(pool, url))
        await asyncio.sleep(0.05)
        assert not second.done() and server.connections == 1
        release.set()
        assert await first == (200, b"slow")
        assert await second == (200, b"quick")
        await pool.close()
    assert server.connections == 1


async def _then_hang_up(writer: asyncio.StreamWriter) -> None:
    writer.write(ok(b"asked"))
    await writer.drain()
    writer.close()  # keep-alive was promised, then the server hangs up while idle


async def _then_answer_again(writer: asyncio.StreamWriter) -> None:
    writer.write(ok(b"asked") + ok(b"never asked"))  # one packet: the parser sees both


async def _then_answer_again_later(writer: asyncio.StreamWriter) -> None:
    writer.write(ok(b"asked"))
    await writer.drain()
    await asyncio.sleep(0.02)
    writer.write(ok(b"never asked"))  # while the connection is idle in the pool


@pytest.mark.parametrize(
    "first",
    [_then_hang_up, _then_answer_again, _then_answer_again_later],
    ids=["closed while idle", "second response, same packet", "second response while idle"],
)
async def test_a_connection_that_cannot_carry_another_exchange_is_not_reused(
    first: Callable[[asyncio.StreamWriter], Awaitable[None]],
) -> None:
    async with scripted(first, ok(b"clean")) as server:
        pool = Http1Pool()
        url = f"http://127.0.0.1:{server.port}/"
        assert await fetch(pool, url) == (200, b"asked")
        await asyncio.sleep(0.05)
        assert await fetch(pool, url) == (200, b"clean")
        await pool.close()
    assert server.connections == 2


async def test_an_interim_response_is_skipped() -> None:
    async with scripted(b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b"final")) as server:
        pool = Http1Pool()
        assert await fetch(pool, f"http://127.0.0.1:{server.port}/") == (200, b"final")
        await pool.close()


async def test_a_head_request_ends_at_the_head() -> None:
    async with scripted(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n", ok(b"next")) as server:
        pool = Http1Pool()
        url = f"http://127.0.0.1:{server.port}/"
        async with asyncio.timeout(2):
            assert await fetch(pool, url, method="HEAD") == (200, b"")
            assert await fetch(pool, url) == (200, b"next")
        await pool.close()


async def test_repeated_header_fields_are_joined_and_names_lowercased() -> None:
    async with scripted(ok(b"", "Set-Cookie: a=1", "X-Trace: t", "set-cookie: b=2")) as server:
        pool = Http1Pool()
        response = await pool.request("GET", f"http://127.0.0.1:{server.port}/", {}, None)
        assert response.headers["set-cookie"] == "a=1, b=2"
        assert response.headers["x-trace"] == "t"
        await response.read(10)
        response.release()
        await pool.close()


@pytest.mark.parametrize(
    ("headers", "url", "message"),
    [
        ({"X-A": "ok\r\nX-Injected: 1"}, "http://127.0.0.1:{port}/", "CR, LF or NUL"),
        ({"X-A\r\nX-B": "v"}, "http://127.0.0.1:{port}/", "CR, LF or NUL"),
        ({"X-A": "nul\x00"}, "http://127.0.0.1:{port}/", "CR, LF or NUL"),
        ({"Bad Name": "v"}, "http://127.0.0.1:{port}/", "is not a header name"),
        ({"Host": "evil.test"}, "http://127.0.0.1:{port}/", "set by the client"),
        ({"Content-Length": "0"}, "http://127.0.0.1:{port}/", "set by the client"),
        ({"Transfer-Encoding": "chunked"}, "http://127.0.0.1:{port}/", "set by the client"),
        ({"X-A": "snowman \u2603"}, "http://127.0.0.1:{port}/", "outside Latin-1"),
        ({}, "http://127.0.0.1:{port}/a b", "request line would not be valid"),
        ({}, "ftp://127.0.0.1:{port}/", "not an http"),
        ({}, "http://127.0.0.1:99999/", "not a valid URL"),
    ],
)
async def test_what_cannot_go_on_the_wire_is_refused_before_connecting(
    headers: dict[str, str], url: str, message: str
) -> None:
    async with scripted(ok(b"never")) as server:
        pool = Http1Pool()
        with pytest.raises(ValueError, match=message):
            await pool.request("GET", url.format(port=server.port), headers, None)
        await pool.close()
    assert server.connections == 0


async def test_resolve_picks_the_addresses_and_the_next_one_is_tried() -> None:
    async with scripted(ok(b"via 127.0.0.1")) as server:
        asked: list[tuple[str, int]] = []

        async def resolve(host: str, port: int) -> list[str]:
            asked.append((host, port))
            return ["127.0.0.2", "127.0.0.1"]  # nothing listens on the first

        pool = Http1Pool(resolve=resolve)
        url = f"http://api.test:{server.port}/"
        assert await fetch(pool, url) == (200, b"via 127.0.0.1")
        await pool.close()
    assert asked == [("api.test", server.port)]
    assert f"Host: api.test:{server.port}\r\n".encode() in server.requests[0]


async def test_a_refused_connection_is_a_connect_error() -> None:
    async with scripted() as server:
        port = server.port
    pool = Http1Pool()
    with pytest.raises(Http1ConnectError, match=f"cannot connect to 127.0.0.1:{port}"):
        await fetch(pool, f"http://127.0.0.1:{port}/")
    await pool.close()


async def test_a_slow_reader_gets_every_byte_of_a_large_body() -> None:
    body = bytes(range(256)) * (6 * 4096)  # 6 MiB: reading pauses above the high-water mark
    async with scripted(ok(body)) as server:
        pool = Http1Pool()
        response = await pool.request("GET", f"http://127.0.0.1:{server.port}/", {}, None)
        got = bytearray()
        most = 0
        while data := await response.read_some():
            most = max(most, len(data))
            got += data
            await asyncio.sleep(0.01)
        response.release()
        await pool.close()
    assert bytes(got) == body
    assert most <= http1.HIGH_WATER + (1 << 18)  # one read past the mark at most


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


async def test_tls_verifies_the_certificate_and_the_host_name(
    certificate: tuple[Path, Path],
) -> None:
    cert, key = certificate
    server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_side.load_cert_chain(cert, key)
    trusting = ssl.create_default_context(cafile=str(cert))
    async with scripted(ok(b"secret"), tls=server_side) as server:
        pool = Http1Pool(ssl_context=trusting)
        assert await fetch(pool, f"https://localhost:{server.port}/") == (200, b"secret")
        with pytest.raises(Http1ConnectError, match="certificate"):
            # The same server under a name its certificate does not carry.
            await fetch(pool, f"https://127.0.0.1:{server.port}/")
        await pool.close()
        default = Http1Pool()  # the system's trust store does not know this certificate
        with pytest.raises(Http1ConnectError, match="certificate verify failed"):
            await fetch(default, f"https://localhost:{server.port}/")
        await default.close()
    assert server.requests[0].startswith(b"GET / HTTP/1.1")
    assert len(server.requests) == 1


async def test_a_deadline_bounds_the_head_and_frees_the_slot() -> None:
    async def never_answers(writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(10)

    async with scripted(never_answers, ok(b"after")) as server:
        pool = Http1Pool(max_connections=1)
        loop = asyncio.get_running_loop()
        url = f"http://127.0.0.1:{server.port}/"
        started = loop.time()
        with pytest.raises(TimeoutError):
            await pool.request("GET", url, {}, None, deadline=started + 0.2)
        assert 0.15 < loop.time() - started < 2
        assert await fetch(pool, url) == (200, b"after")  # slot free, no half-done connection
        await pool.close()
    assert server.connections == 2


async def test_a_deadline_bounds_a_body_that_drips_and_spans_the_readers_pauses() -> None:
    async def drips(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
        for _ in range(100):
            writer.write(b"x")
            await writer.drain()
            await asyncio.sleep(0.05)

    async with scripted(drips) as server:
        pool = Http1Pool()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 0.3
        response = await pool.request(
            "GET", f"http://127.0.0.1:{server.port}/", {}, None, deadline=deadline
        )
        got = b""
        with pytest.raises(TimeoutError):
            while data := await response.read_some():
                got += data
                await asyncio.sleep(0.01)  # the reader's own pauses count too
        response.release()
        assert 0 < len(got) < 100
        assert loop.time() - deadline < 1
        await pool.close()


async def test_a_deadline_already_past_sends_nothing() -> None:
    async with scripted(ok(b"never")) as server:
        pool = Http1Pool()
        past = asyncio.get_running_loop().time() - 1
        with pytest.raises(TimeoutError):
            await pool.request("GET", f"http://127.0.0.1:{server.port}/", {}, None, deadline=past)
        await pool.close()
    assert server.connections == 0


async def test_a_header_block_checked_once_sends_what_the_mapping_would() -> None:
    headers = {"Authorization": "Bearer k", "Content-Type": "application/json"}
    block = HeaderBlock(headers)
    async with scripted(ok(b"1"), ok(b"2"), ok(b"3")) as server:
        pool = Http1Pool()
        url = f"http://127.0.0.1:{server.port}/v1"
        for given in (headers, block, block):
            response = await pool.request("POST", url, given, b"{}")
            await response.read(10)
            response.release()
        await pool.close()
    first, second, third = server.requests
    assert first == second == third
    assert b"Authorization: Bearer k\r\n" in first and b"Content-Length: 2\r\n" in first
    with pytest.raises(ValueError, match="'Authorization' holds CR, LF or NUL"):
        HeaderBlock({"Authorization": "Bearer k\r\nX-Evil: 1"})


async def test_an_idle_connection_already_closing_is_skipped_not_written_to() -> None:
    # The server's close is seen (the transport is closing) before it is reported as lost: a
    # request taking that connection would be lost with it, so it gets a fresh one.
    async with scripted(ok(b"first"), ok(b"second")) as server:
        pool = Http1Pool()
        url = f"http://127.0.0.1:{server.port}/"
        assert await fetch(pool, url) == (200, b"first")
        [idle] = [conn for conns in pool._idle.values() for conn in conns]
        assert idle.transport is not None
        idle.transport.close()  # closing now, connection_lost comes on a later loop turn
        assert not idle.closed
        assert await fetch(pool, url) == (200, b"second")
        await pool.close()
    assert server.connections == 2
