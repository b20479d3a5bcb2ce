"""``serve``'s HTTP protocol: a response's head and body leave in one write, streams still flow."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn

from gateway.cli.serving import JoinedWritesProtocol, ReadyServer, _JoinedWrites


class RecordingTransport:
    """The parts of a transport the wrapper uses, recording what reaches the socket."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = self.aborted = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def get_extra_info(self, name: str) -> Any:
        return {"peername": ("127.0.0.1", 5)}.get(name)


async def next_pass() -> None:
    await asyncio.sleep(0)
    await asyncio.sleep(0)


async def test_a_head_leaves_with_its_body_and_a_lone_write_when_the_pass_ends() -> None:
    raw = RecordingTransport()
    joined = _JoinedWrites(raw, asyncio.get_running_loop())  # type: ignore[arg-type]
    joined.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    assert raw.writes == []  # held for the body
    joined.write(b"ok")
    # At once, as one write: a whole response does not wait for the pass to end.
    assert raw.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"]
    await next_pass()
    assert len(raw.writes) == 1  # the flush scheduled for the head found nothing held
    joined.write(b"data: 1\n\n")  # a stream's chunks, one per pass: each leaves as it ends
    assert raw.writes[1:] == []
    await next_pass()
    joined.write(b"data: 2\n\n")
    await next_pass()
    assert raw.writes[1:] == [b"data: 1\n\n", b"data: 2\n\n"]
    joined.write(b"HTTP/1.1 200 OK\r\n\r\n")
    joined.write(b"x" * 70_000)  # a large body is not copied onto the head
    assert raw.writes[3:] == [b"HTTP/1.1 200 OK\r\n\r\n", b"x" * 70_000]
    assert joined.get_extra_info("peername") == ("127.0.0.1", 5)  # the rest is the transport's
    assert not joined.is_closing()
    raw.closed = True
    assert joined.is_closing()  # the transport's own state, asked after every response


async def test_close_sends_what_was_gathered_first_and_abort_drops_it() -> None:
    loop = asyncio.get_running_loop()
    raw = RecordingTransport()
    joined = _JoinedWrites(raw, loop)  # type: ignore[arg-type]
    joined.write(b"head")
    joined.close()
    assert raw.writes == [b"head"] and raw.closed
    await next_pass()
    assert raw.writes == [b"head"]  # the scheduled flush found nothing more
    aborted = RecordingTransport()
    joined = _JoinedWrites(aborted, loop)  # type: ignore[arg-type]
    joined.write(b"never sent")
    joined.abort()
    await next_pass()
    assert aborted.writes == [] and aborted.aborted


async def stream_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    if scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for n in range(3):
            await send({"type": "http.response.body", "body": b"x%d;" % n, "more_body": True})
            await asyncio.sleep(0.2)
        await send({"type": "http.response.body", "body": b"end"})
        return
    headers = [(b"content-length", b"5")]
    if scope["path"] == "/close":
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"hello"})


@pytest.fixture
async def server() -> AsyncIterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        stream_app, http=JoinedWritesProtocol, lifespan="off", log_level="error"
    )
    running = ReadyServer(config)
    task = asyncio.create_task(running.serve(sockets=[sock]))
    await asyncio.wait_for(running.ready.wait(), 10)
    yield sock.getsockname()[1]
    running.should_exit = True
    await task


async def read_response(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    return head + await reader.readexactly(5)


async def test_a_real_server_keeps_alive_closes_and_streams(server: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server)
    for _ in range(2):  # two requests on one connection
        writer.write(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        answer = await asyncio.wait_for(read_response(reader), 5)
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"\r\n\r\nhello")
    writer.write(b"GET /close HTTP/1.1\r\nHost: t\r\n\r\n")
    answer = await asyncio.wait_for(read_response(reader), 5)
    assert answer.endswith(b"hello") and b"connection: close" in answer.lower()
    assert await asyncio.wait_for(reader.read(), 5) == b""  # the whole answer, then the close
    writer.close()

    reader, writer = await asyncio.open_connection("127.0.0.1", server)
    writer.write(b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\n")
    loop = asyncio.get_running_loop()
    started = loop.time()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    first = await asyncio.wait_for(reader.readuntil(b";\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200 OK") and b"transfer-encoding: chunked" in head
    assert first.endswith(b"x0;\r\n")
    assert loop.time() - started < 0.15  # not held back until the stream's end (0.6 s)
    rest = await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), 5)
    assert b"x2;" in rest and b"end" in rest
    writer.close()
