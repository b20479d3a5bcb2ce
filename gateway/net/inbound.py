"""What every front reads off a client's request: the bearer credential and a capped body."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import orjson
from starlette.requests import Request
from starlette.types import Message, Receive

from gateway.errors import RequestError

__all__ = [
    "MAX_REQUEST_BYTES",
    "bearer_token",
    "check_declared_length",
    "header_map",
    "read_body_bytes",
    "read_json_body",
    "replay_receive",
]

MAX_REQUEST_BYTES = 4 << 20
"""The largest request body a front reads (4 MiB)."""


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value, or ``None``.

    The scheme is case-insensitive (RFC 9110); an empty token counts as none.
    """
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def _too_large(cap: int) -> RequestError:
    return RequestError(413, f"request body larger than {cap} bytes", "too_large")


def header_map(request: Request) -> dict[str, str]:
    """The request's headers by lower-case name (the last of a repeated one), as Latin-1 text.

    Read from the ASGI scope in one pass: no framework header object, no second decoding.
    """
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in request.scope["headers"]}


def check_declared_length(request: Request, cap: int = MAX_REQUEST_BYTES) -> None:
    """Refuse a declared ``Content-Length`` over ``cap`` before anything is read.

    Raises:
        RequestError: 413 for a declared length over the cap.
    """
    declared = (request.headers.get("content-length") or "").strip()
    # A malformed length never gets here: the HTTP server refuses it first.
    if declared.isdigit() and int(declared) > cap:
        raise _too_large(cap)


async def read_body_bytes(request: Request, cap: int = MAX_REQUEST_BYTES) -> bytes:
    """The request's body, refused with a 413 as soon as it passes ``cap`` bytes.

    A declared ``Content-Length`` over the cap is refused before anything is read; a chunked
    body is counted as it arrives, so no more than ``cap`` bytes (plus one network chunk) are
    ever held. Call it only after the caller's credentials are checked, so an anonymous client
    cannot make the gateway read anything at all.

    Raises:
        RequestError: 413 for a body over the cap.
    """
    check_declared_length(request, cap)
    chunks = bytearray()
    async for chunk in request.stream():
        chunks += chunk
        if len(chunks) > cap:
            raise _too_large(cap)
    return bytes(chunks)


async def read_json_body(request: Request, cap: int = MAX_REQUEST_BYTES) -> Any:
    """The request's JSON body, read by :func:`read_body_bytes` (so capped the same way).

    Raises:
        RequestError: 413 for a body over the cap, 400 for one that is not JSON.
    """
    body = await read_body_bytes(request, cap)
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise RequestError(
            400, f"the request body is not valid JSON: {e}", "invalid_json"
        ) from None


def replay_receive(body: bytes, receive: Receive) -> Receive:
    """An ASGI ``receive`` that hands an already read body over once, then defers to ``receive``.

    Lets a front read (and cap) the body itself before an inner app that would read it
    unbounded; later calls (``http.disconnect``) go to the real connection.
    """
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


CONVERSATION_HEADER = "x-actiongate-conversation-id"
"""Response header naming the conversation, on every front."""

# Printable ASCII except "%" stays as it is; everything else is percent-encoded UTF-8.
_HEADER_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")


def conversation_header(conversation_id: str) -> dict[str, str]:
    """``x-actiongate-conversation-id`` for a response.

    A conversation id is any string a client chose; a header value must be Latin-1 without
    control characters. Ids of printable ASCII without ``%`` are sent as they are; others
    percent-encoded (UTF-8), so ``urllib.parse.unquote`` always gives the id back.
    """
    if conversation_id.isascii() and conversation_id.isprintable() and "%" not in conversation_id:
        return {CONVERSATION_HEADER: conversation_id}  # the usual case, and what quote() gives
    return {CONVERSATION_HEADER: quote(conversation_id, safe=_HEADER_SAFE)}
