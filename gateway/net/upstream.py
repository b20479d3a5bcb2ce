"""Client for the agent's OpenAI-compatible upstream (the LLM API).

Upstream URLs come from the operator's config, never from a client or a model, so this session
does not use the egress guard (an upstream on localhost is normal). Failures become
:class:`~gateway.errors.UpstreamError` with the status the proxy answers with: 4xx keeps the
upstream's status and message, 5xx and unreachable become 502, a timeout 504. The upstream key
never appears in an error. Output that does not have OpenAI's shape (``choices`` that is not a
list of objects, a ``message`` or a tool call that is not an object, ...) is an upstream failure
too (502, naming the field): :func:`completion_message` checks a whole completion before anything
in it is acted on, :class:`~gateway.net.sse.ChunkAssembler` each streamed chunk.

:attr:`Upstream.hook` lets recording (:mod:`gateway.replay.recording`) and replay
(:mod:`gateway.replay.run`) see or answer every call; it is None in normal operation, which costs
one attribute check per call.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from gateway.errors import UpstreamError
from gateway.net import dialects
from gateway.net.http1 import BodyTooLarge, HeaderBlock, Http1Error, Http1Pool, Http1Response
from gateway.net.sse import LineSplitter, LineTooLong, malformed

__all__ = ["Upstream", "UpstreamHook", "UpstreamTarget", "completion_message"]

_MAX_ERROR_BODY = 64 * 1024
_MAX_LINE = 4 << 20
_MAX_BODY = 64 << 20
"""Most bytes of one non-streamed completion (decoded)."""


@dataclass(frozen=True, slots=True)
class UpstreamTarget:
    """Where one agent's completions go."""

    base_url: str
    api_key: str
    model: str
    timeout_s: float = 120.0
    api: str = "chat"
    """The upstream's wire format: ``chat``, ``responses`` or ``anthropic`` (:mod:`dialects`)."""

    @property
    def url(self) -> str:
        """The endpoint of the upstream's API."""
        path = {"anthropic": "/messages", "responses": "/responses"}.get(
            self.api, "/chat/completions"
        )
        return self.base_url.rstrip("/") + path

    def body(self, payload: dict[str, Any]) -> bytes:
        """The request body in the upstream's dialect."""
        if self.api == "anthropic":
            return orjson.dumps(dialects.anthropic_request(payload, self.model))
        if self.api == "responses":
            return orjson.dumps(dialects.responses_request(payload, self.model))
        return orjson.dumps(payload)


def _scrub(text: str, target: UpstreamTarget) -> str:
    if target.api_key and len(target.api_key) >= 4:
        text = text.replace(target.api_key, "[REDACTED]")
    return text


def _error_message(body: bytes, status: int, target: UpstreamTarget) -> tuple[str, str]:
    """The upstream's own error message and type, when it sent OpenAI's error shape."""
    try:
        data = orjson.loads(body[:_MAX_ERROR_BODY])
        err = data.get("error") if isinstance(data, dict) else None
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return _scrub(err["message"], target), str(err.get("type") or "upstream_error")
        if isinstance(err, str):
            return _scrub(err, target), "upstream_error"
    except orjson.JSONDecodeError:
        pass
    return f"the upstream answered HTTP {status}", "upstream_error"


def completion_message(data: Any) -> dict[str, Any]:
    """The assistant message of a non-streamed completion, checked for OpenAI's shape.

    Every tool call is checked before any runs: a half-garbled answer runs nothing.

    Raises:
        UpstreamError: 502, naming the first field that is not what OpenAI sends.
    """
    if not isinstance(data, dict):
        raise malformed("the completion", "is not a JSON object")
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices:
        raise malformed("choices", "is not a non-empty list")
    if not isinstance(choices[0], dict):
        raise malformed("choices[0]", "is not an object")
    message = choices[0].get("message")
    if message is None:
        return {}
    if not isinstance(message, dict):
        raise malformed("choices[0].message", "is not an object")
    calls = message.get("tool_calls")
    if calls is None:
        return dict(message)
    if not isinstance(calls, list):
        raise malformed("choices[0].message.tool_calls", "is not a list")
    for position, call in enumerate(calls):
        where = f"choices[0].message.tool_calls[{position}]"
        if not isinstance(call, dict):
            raise malformed(where, "is not an object")
        if not isinstance(call.get("id"), str | None):
            raise malformed(f"{where}.id", "is not a string")
        function = call.get("function")
        if not isinstance(function, dict):
            raise malformed(f"{where}.function", "is not an object")
        if not isinstance(function.get("name"), str | None):
            raise malformed(f"{where}.function.name", "is not a string")
    return dict(message)


CompleteFn = Callable[[UpstreamTarget, dict[str, Any]], Awaitable[dict[str, Any]]]
StreamFn = Callable[[UpstreamTarget, dict[str, Any]], AsyncGenerator[dict[str, Any], None]]


class UpstreamHook(Protocol):
    """Sees every upstream call: may pass it on through ``send`` (recording) or answer it."""

    async def complete(
        self, target: UpstreamTarget, payload: dict[str, Any], send: CompleteFn
    ) -> dict[str, Any]:
        """Answer one non-streamed completion."""
        ...

    def stream(
        self, target: UpstreamTarget, payload: dict[str, Any], send: StreamFn
    ) -> AsyncIterator[dict[str, Any]]:
        """Answer one streamed completion, chunk by chunk."""
        ...


class Upstream:
    """One keep-alive connection pool (:mod:`gateway.net.http1`) for every upstream call."""

    def __init__(self, *, max_connections: int = 500) -> None:
        self._max_connections = max_connections
        self._http: Http1Pool | None = None
        self.hook: UpstreamHook | None = None
        """Recording or replay interception (:mod:`gateway.replay.recording`,
        :mod:`gateway.replay.run`)."""

    def _ensure(self) -> Http1Pool:
        if self._http is None:
            self._http = Http1Pool(max_connections=self._max_connections)
        return self._http

    async def close(self) -> None:
        """Close the pool's connections."""
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def _send(
        self, target: UpstreamTarget, payload: dict[str, Any], deadline: float
    ) -> Http1Response:
        try:
            return await self._ensure().request(
                "POST", target.url, self._headers(target), target.body(payload), deadline=deadline
            )
        except ValueError as e:  # a header or URL that cannot go on the wire; never the key
            raise UpstreamError(
                502, f"the upstream request cannot be sent: {e}", "upstream_unreachable"
            ) from None

    @staticmethod
    @functools.lru_cache(maxsize=256)
    def _headers(target: UpstreamTarget) -> HeaderBlock:
        # Checked and joined once per target (a refusal, never cached, names only the header).
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if target.api == "anthropic":
            headers["anthropic-version"] = dialects.ANTHROPIC_VERSION
            if target.api_key:
                headers["x-api-key"] = target.api_key
        elif target.api_key:
            headers["Authorization"] = f"Bearer {target.api_key}"
        return HeaderBlock(headers)

    async def _raise_for(self, resp: Http1Response, target: UpstreamTarget) -> None:
        if resp.status < 400:
            return
        body = b""
        while len(body) < _MAX_ERROR_BODY and (data := await resp.read_some()):
            body += data
        message, kind = _error_message(body, resp.status, target)
        if resp.status >= 500:
            raise UpstreamError(502, f"upstream error: {message}", "upstream_error")
        raise UpstreamError(resp.status, message, kind)

    async def complete(self, target: UpstreamTarget, payload: dict[str, Any]) -> dict[str, Any]:
        """One non-streamed completion."""
        if self.hook is not None:
            return await self.hook.complete(target, payload, self._complete)
        return await self._complete(target, payload)

    def stream(
        self, target: UpstreamTarget, payload: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]:
        """A streamed completion, one parsed ``chat.completion.chunk`` at a time."""
        if self.hook is not None:
            return self.hook.stream(target, payload, self._stream)
        return self._stream(target, payload)

    async def _complete(self, target: UpstreamTarget, payload: dict[str, Any]) -> dict[str, Any]:
        deadline = asyncio.get_running_loop().time() + target.timeout_s
        try:
            resp = await self._send(target, payload, deadline)
            try:
                await self._raise_for(resp, target)
                raw = await resp.read(_MAX_BODY)
            finally:
                resp.release()
            data = orjson.loads(raw)
        except TimeoutError:
            raise UpstreamError(
                504, "the upstream did not answer in time", "upstream_timeout"
            ) from None
        except BodyTooLarge:
            raise UpstreamError(
                502, f"the upstream's completion is larger than {_MAX_BODY >> 20} MiB"
            ) from None
        except (Http1Error, ConnectionError, orjson.JSONDecodeError) as e:
            raise UpstreamError(
                502,
                f"the upstream could not be reached ({type(e).__name__})",
                "upstream_unreachable",
            ) from None
        if target.api == "anthropic":
            data = dialects.chat_from_anthropic(data)
        elif target.api == "responses":
            data = dialects.chat_from_responses(data)
        if not isinstance(data, dict) or not data.get("choices"):
            raise UpstreamError(502, "the upstream sent a completion without choices")
        return data

    async def _stream(
        self, target: UpstreamTarget, payload: dict[str, Any]
    ) -> AsyncGenerator[dict[str, Any], None]:
        # The deadline is the pool's timer on the connection, not a cancel scope: one spanning
        # a ``yield`` would cancel whichever task is consuming the stream at that moment.
        deadline = asyncio.get_running_loop().time() + target.timeout_s
        resp: Http1Response | None = None
        try:
            resp = await self._send(target, payload, deadline)
            await self._raise_for(resp, target)
            lines = LineSplitter(_MAX_LINE)
            translate = _translator(target)
            while True:
                data = await resp.read_some()
                for line in lines.feed(data) if data else lines.finish():
                    chunk = _event(line, target)
                    if chunk is _END:
                        return
                    if chunk is None:
                        continue
                    if translate is None:
                        yield chunk
                        continue
                    for translated in translate.feed(chunk):
                        yield translated
                    if translate.done:
                        return
                if not data:
                    return
        except LineTooLong:
            raise UpstreamError(
                502, f"the upstream sent an event line longer than {_MAX_LINE >> 20} MiB"
            ) from None
        except TimeoutError:
            raise UpstreamError(
                504, "the upstream did not finish in time", "upstream_timeout"
            ) from None
        except (Http1Error, ConnectionError, ValueError) as e:
            raise UpstreamError(
                502, f"the upstream stream broke ({type(e).__name__})", "upstream_unreachable"
            ) from None
        finally:
            if resp is not None:
                resp.release()


_END: Any = object()


def _translator(
    target: UpstreamTarget,
) -> dialects.AnthropicChunks | dialects.ResponsesChunks | None:
    if target.api == "anthropic":
        return dialects.AnthropicChunks()
    if target.api == "responses":
        return dialects.ResponsesChunks()
    return None


def _event(line: bytes, target: UpstreamTarget) -> Any:
    """The parsed ``data:`` of one SSE line; None for other lines, ``_END`` for ``[DONE]``.

    Raises:
        UpstreamError: the upstream sent an error event.
        ValueError: the data is not JSON.
    """
    if not line.startswith(b"data:"):
        return None
    data = line[5:].strip()
    if data == b"[DONE]":
        return _END
    chunk = orjson.loads(data)
    if isinstance(chunk, dict) and "error" in chunk:
        err = chunk["error"]
        msg = err.get("message") if isinstance(err, dict) else str(err)
        raise UpstreamError(502, _scrub(f"upstream error: {msg}", target))
    return chunk
