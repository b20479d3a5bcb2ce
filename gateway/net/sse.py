"""Streaming helpers: split an SSE byte stream into lines, assemble OpenAI
``chat.completion.chunk`` deltas and write SSE events.

Lines are split here rather than by aiohttp's ``readline``, whose own limit (128 to 512 KiB,
depending on the version) would raise before the gateway's 4 MiB cap could apply; a chunk
whose shape is not OpenAI's is an :class:`~gateway.errors.UpstreamError` (502) naming the field.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.errors import UpstreamError

__all__ = ["DONE", "ChunkAssembler", "LineSplitter", "LineTooLong", "malformed", "sse"]

DONE = b"data: [DONE]\n\n"


def sse(event: dict[str, Any]) -> bytes:
    """One server-sent event carrying a JSON object."""
    return b"data: " + orjson.dumps(event) + b"\n\n"


def malformed(where: str, what: str) -> UpstreamError:
    """The error for upstream output that does not have OpenAI's shape (answered with 502)."""
    return UpstreamError(502, f"the upstream sent a malformed completion: {where} {what}")


class LineTooLong(ValueError):
    """One line of the stream is longer than the cap."""


class LineSplitter:
    """Splits bytes into lines (LF or CRLF), holding at most ``max_line`` bytes of one line.

    Args:
        max_line: The longest line accepted, without its line break.
    """

    def __init__(self, max_line: int) -> None:
        self._max = max_line
        self._pending = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """Take the next bytes; return the lines they complete.

        Raises:
            LineTooLong: a line is longer than ``max_line`` (raised as soon as it is, before
                the rest of it is read).
        """
        # Only the new bytes are searched: a long line arriving in pieces is never rescanned.
        *complete, tail = data.split(b"\n")
        lines: list[bytes] = []
        if complete:
            self._pending += complete[0]
            lines = [bytes(self._pending), *complete[1:]]
            self._pending = bytearray()
        self._pending += tail
        lines = [line.removesuffix(b"\r") for line in lines]
        # One byte more while pending: it may be the CR of a CRLF still to come.
        if len(self._pending) > self._max + 1 or any(len(line) > self._max for line in lines):
            raise LineTooLong(f"a line is longer than {self._max} bytes")
        return lines

    def finish(self) -> list[bytes]:
        """The last line, when the stream ended without a line break."""
        rest, self._pending = bytes(self._pending), bytearray()
        return [rest.removesuffix(b"\r")] if rest else []


def _optional(value: Any, kind: type | tuple[type, ...], where: str, what: str) -> Any:
    if value is not None and not isinstance(value, kind):
        raise malformed(where, what)
    return value


class ChunkAssembler:
    """Rebuilds the assistant message of one streamed completion.

    Content deltas are returned from :meth:`add` as they arrive so they can be forwarded at once;
    tool-call deltas are merged by ``index`` (the ``id`` and name arrive in the first delta of
    each call, the arguments in fragments).
    """

    def __init__(self) -> None:
        self.id: str | None = None
        self.created: int | None = None
        self.content: list[str] = []
        self.refusal: list[str] = []
        self.calls: dict[int, dict[str, Any]] = {}
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None

    def add(self, chunk: Any) -> str | None:
        """Take one chunk; return its content delta (if any) for immediate forwarding.

        Raises:
            UpstreamError: the chunk does not have the shape of a ``chat.completion.chunk``.
        """
        if not isinstance(chunk, dict):
            raise malformed("a stream event", "is not a JSON object")
        if isinstance(chunk.get("id"), str):
            self.id = self.id or chunk["id"]
        if isinstance(chunk.get("created"), int):
            self.created = self.created or chunk["created"]
        if isinstance(chunk.get("usage"), dict) and chunk["usage"]:
            self.usage = chunk["usage"]
        choices = _optional(chunk.get("choices"), list, "choices", "is not a list") or []
        text: str | None = None
        for position, choice in enumerate(choices):
            where = f"choices[{position}]"
            if not isinstance(choice, dict):
                raise malformed(where, "is not an object")
            if choice.get("index", 0) != 0:
                continue
            delta = _optional(choice.get("delta"), dict, f"{where}.delta", "is not an object")
            text = self._delta(delta or {}, f"{where}.delta") or text
            reason = choice.get("finish_reason")
            if reason:
                self.finish_reason = str(reason)
        return text

    def _delta(self, delta: dict[str, Any], where: str) -> str | None:
        content = _optional(delta.get("content"), str, f"{where}.content", "is not a string")
        if content:
            self.content.append(content)
        refusal = _optional(delta.get("refusal"), str, f"{where}.refusal", "is not a string")
        if refusal:
            self.refusal.append(refusal)
        parts = _optional(delta.get("tool_calls"), list, f"{where}.tool_calls", "is not a list")
        for position, part in enumerate(parts or []):
            self._merge_call(part, f"{where}.tool_calls[{position}]")
        return content or None

    def _merge_call(self, part: Any, where: str) -> None:
        if not isinstance(part, dict):
            raise malformed(where, "is not an object")
        index = part.get("index", len(self.calls))
        if not isinstance(index, int) or isinstance(index, bool):
            raise malformed(f"{where}.index", "is not an integer")
        call_id = _optional(part.get("id"), str, f"{where}.id", "is not a string")
        function = _optional(part.get("function"), dict, f"{where}.function", "is not an object")
        function = function or {}
        name = _optional(function.get("name"), str, f"{where}.function.name", "is not a string")
        arguments = _optional(
            function.get("arguments"), str, f"{where}.function.arguments", "is not a string"
        )
        call = self.calls.setdefault(
            index, {"id": None, "type": "function", "function": {"name": "", "arguments": ""}}
        )
        if call_id:
            call["id"] = call_id
        if name:
            call["function"]["name"] += name
        if arguments:
            call["function"]["arguments"] += arguments

    def message(self) -> dict[str, Any]:
        """The assembled assistant message."""
        message: dict[str, Any] = {
            "role": "assistant",
            "content": "".join(self.content) if self.content else None,
        }
        if self.refusal:
            message["refusal"] = "".join(self.refusal)
        if self.calls:
            message["tool_calls"] = [self.calls[i] for i in sorted(self.calls)]
        return message
