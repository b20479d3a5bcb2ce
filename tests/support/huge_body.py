"""A body far over a route's cap, streamed to a real server until it answers, and its memory."""

from __future__ import annotations

import re
import select
import socket
import time
from pathlib import Path

CHUNK = 64 << 10


def post_huge(
    port: int,
    path: str,
    headers: dict[str, str],
    total: int,
    *,
    chunked: bool,
    content_type: str = "application/json",
) -> int:
    """Stream a ``total``-byte POST body until the server answers; the response's status.

    Stops sending as soon as the answer arrives (a server that refuses early has no reason to
    take the rest), and waits on the socket, never on a timer.
    """
    head = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Type: {content_type}"]
    head.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {total}")
    head += [f"{k}: {v}" for k, v in headers.items()]
    pending = ("\r\n".join(head) + "\r\n\r\n").encode()
    data = (b"{" if content_type == "application/json" else b"a") * CHUNK
    frame = f"{CHUNK:x}\r\n".encode() + data + b"\r\n" if chunked else data
    sent, response, writing = 0, b"", True
    deadline = time.monotonic() + 60
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setblocking(False)
        while b"\r\n" not in response:
            left = deadline - time.monotonic()
            assert left > 0, f"no answer on {path}"
            wants = [sock] if writing else []
            readable, writable, _ = select.select([sock], wants, [], left)
            if readable:
                try:
                    got = sock.recv(65536)
                except ConnectionResetError:
                    break
                if not got:
                    break
                response += got
                continue
            if writable:
                if not pending:
                    if sent < total:
                        pending, sent = frame, sent + CHUNK
                    elif chunked and sent == total:
                        pending, sent = b"0\r\n\r\n", sent + 1
                    else:
                        writing = False
                        continue
                try:
                    pending = pending[sock.send(pending) :]
                except (BrokenPipeError, ConnectionResetError):
                    writing = False
    match = re.match(rb"HTTP/1\.1 (\d{3})", response)
    assert match, f"{path}: {response[:200]!r}"
    return int(match.group(1))


def peak_rss_kib(pid: int) -> int:
    """The process's peak resident memory (``VmHWM``), in KiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    assert match, status
    return int(match.group(1))
