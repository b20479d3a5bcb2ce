"""What every front reads off a client's request: the bearer credential and a capped body."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request

from gateway.errors import RequestError

__all__ = ["MAX_REQUEST_BYTES", "bearer_token", "read_json_body"]

MAX_REQUEST_BYTES = 4 << 20
"""The largest request body a front reads (4 MiB)."""


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value, or ``None``.

    The scheme is case-insensitive (RFC 9110); an empty token counts as none.
    """
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


async def read_json_body(request: Request, cap: int = MAX_REQUEST_BYTES) -> Any:
    """The request's JSON body, refused with a 413 as soon as it passes ``cap`` bytes.

    A declared ``Content-Length`` over the cap is refused before anything is read; a chunked
    body is counted as it arrives, so no more than ``cap`` bytes are ever held.

    Raises:
        RequestError: 413 for a body over the cap, 400 for one that is not JSON.
    """
    too_large = RequestError(413, f"request body larger than {cap} bytes", "too_large")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > cap:
        raise too_large
    chunks = bytearray()
    async for chunk in request.stream():
        chunks += chunk
        if len(chunks) > cap:
            raise too_large
    try:
        return orjson.loads(chunks)
    except orjson.JSONDecodeError as e:
        raise RequestError(
            400, f"the request body is not valid JSON: {e}", "invalid_json"
        ) from None
