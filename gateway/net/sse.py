"""Streaming helpers: assemble OpenAI ``chat.completion.chunk`` deltas and write SSE events."""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["DONE", "ChunkAssembler", "sse"]

DONE = b"data: [DONE]\n\n"


def sse(event: dict[str, Any]) -> bytes:
    """One server-sent event carrying a JSON object."""
    return b"data: " + orjson.dumps(event) + b"\n\n"


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

    def add(self, chunk: dict[str, Any]) -> str | None:
        """Take one chunk; return its content delta (if any) for immediate forwarding."""
        self.id = self.id or chunk.get("id")
        self.created = self.created or chunk.get("created")
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        text: str | None = None
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if delta.get("content"):
                text = delta["content"]
                self.content.append(delta["content"])
            if delta.get("refusal"):
                self.refusal.append(delta["refusal"])
            for part in delta.get("tool_calls") or []:
                call = self.calls.setdefault(
                    int(part.get("index", len(self.calls))),
                    {"id": None, "type": "function", "function": {"name": "", "arguments": ""}},
                )
                if part.get("id"):
                    call["id"] = part["id"]
                function = part.get("function") or {}
                if function.get("name"):
                    call["function"]["name"] += function["name"]
                if function.get("arguments"):
                    call["function"]["arguments"] += function["arguments"]
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return text

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
