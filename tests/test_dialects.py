"""Upstream dialect translations as pure functions; over the wire in test_fronts_matrix.py."""

from __future__ import annotations

import pytest

from gateway.errors import UpstreamError
from gateway.net import dialects
from gateway.net.sse import ChunkAssembler

CHAT = {
    "model": "ignored",
    "messages": [
        {"role": "system", "content": "Agent prompt."},
        {"role": "system", "content": "Client prompt."},
        {"role": "user", "content": "Where is A-1?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "look", "arguments": '{"n":"A-1"}'},
                },
                {
                    "id": "c2",
                    "type": "function",
                    "function": {"name": "weather", "arguments": "{}"},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "shipped"},
        {"role": "tool", "tool_call_id": "c2", "content": "sunny"},
        {"role": "user", "content": [{"type": "text", "text": "Thanks"}]},
    ],
    "tools": [
        {
            "type": "function",
            "function": {"name": "look", "description": "d", "parameters": {"type": "object"}},
        }
    ],
    "tool_choice": "required",
    "parallel_tool_calls": False,
    "temperature": 0.1,
    "stop": "END",
    "stream": True,
}


def test_anthropic_request_merges_roles_and_maps_tools() -> None:
    body = dialects.anthropic_request(CHAT, "claude-x")
    assert body["model"] == "claude-x" and body["max_tokens"] == dialects.DEFAULT_MAX_TOKENS
    assert body["system"] == "Agent prompt.\n\nClient prompt."
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["messages"][1]["content"][0] == {
        "type": "tool_use",
        "id": "c1",
        "name": "look",
        "input": {"n": "A-1"},
    }
    results = body["messages"][2]["content"]
    assert results[:2] == [
        {"type": "tool_result", "tool_use_id": "c1", "content": "shipped"},
        {"type": "tool_result", "tool_use_id": "c2", "content": "sunny"},
    ]
    assert results[2] == {"type": "text", "text": "Thanks"}
    assert body["tools"] == [
        {"name": "look", "description": "d", "input_schema": {"type": "object"}}
    ]
    assert body["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert (
        body["stop_sequences"] == ["END"] and body["temperature"] == 0.1 and body["stream"] is True
    )


def test_anthropic_answers_become_chat_completions_whole_and_streamed() -> None:
    whole = dialects.chat_from_anthropic(
        {
            "id": "msg_1",
            "content": [
                {"type": "text", "text": "Let me look."},
                {"type": "tool_use", "id": "t1", "name": "look", "input": {"n": "A-1"}},
            ],
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 10, "output_tokens": 5},
        }
    )
    choice = whole["choices"][0]
    assert (
        choice["finish_reason"] == "tool_calls" and choice["message"]["content"] == "Let me look."
    )
    assert choice["message"]["tool_calls"][0]["function"] == {
        "name": "look",
        "arguments": '{"n":"A-1"}',
    }
    assert whole["usage"] == {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    events = [
        {"type": "message_start", "message": {"id": "msg_2", "usage": {"input_tokens": 7}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hel"}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "lo"}},
        {"type": "content_block_stop", "index": 0},
        {
            "type": "content_block_start",
            "index": 1,
            "content_block": {"type": "tool_use", "id": "t9", "name": "look", "input": {}},
        },
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": '{"n":'},
        },
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": '"A-2"}'},
        },
        {"type": "content_block_stop", "index": 1},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use"},
            "usage": {"output_tokens": 4},
        },
        {"type": "message_stop"},
    ]
    translate, assembler = dialects.AnthropicChunks(), ChunkAssembler()
    texts = [assembler.add(c) for e in events for c in translate.feed(e)]
    assert [t for t in texts if t] == ["Hel", "lo"] and translate.done
    assert assembler.message() == {
        "role": "assistant",
        "content": "Hello",
        "tool_calls": [
            {
                "id": "t9",
                "type": "function",
                "function": {"name": "look", "arguments": '{"n":"A-2"}'},
            }
        ],
    }
    assert assembler.finish_reason == "tool_calls" and assembler.usage == {
        "prompt_tokens": 7,
        "completion_tokens": 4,
        "total_tokens": 11,
    }
    with pytest.raises(UpstreamError, match="overloaded"):
        dialects.AnthropicChunks().feed(
            {"type": "error", "error": {"type": "overloaded_error", "message": "overloaded"}}
        )


def test_responses_request_and_answers() -> None:
    body = dialects.responses_request(CHAT, "gpt-x")
    assert body["instructions"] == "Agent prompt.\n\nClient prompt." and body["store"] is False
    kinds = [i.get("type", i.get("role")) for i in body["input"]]
    assert kinds == [
        "user",
        "function_call",
        "function_call",
        "function_call_output",
        "function_call_output",
        "user",
    ]
    assert body["input"][1] == {
        "type": "function_call",
        "call_id": "c1",
        "name": "look",
        "arguments": '{"n":"A-1"}',
    }
    assert body["input"][3] == {
        "type": "function_call_output",
        "call_id": "c1",
        "output": "shipped",
    }
    assert body["tools"][0] == {
        "type": "function",
        "name": "look",
        "description": "d",
        "parameters": {"type": "object"},
    }
    assert body["tool_choice"] == "required" and body["parallel_tool_calls"] is False
    whole = dialects.chat_from_responses(
        {
            "id": "resp_1",
            "status": "completed",
            "output": [
                {"type": "message", "content": [{"type": "output_text", "text": "Hi"}]},
                {"type": "function_call", "call_id": "call_7", "name": "look", "arguments": "{}"},
            ],
            "usage": {"input_tokens": 3, "output_tokens": 2},
        }
    )
    assert whole["choices"][0]["finish_reason"] == "tool_calls"
    assert whole["choices"][0]["message"]["tool_calls"][0]["id"] == "call_7"
    events = [
        {"type": "response.created", "response": {"id": "resp_2"}},
        {"type": "response.output_text.delta", "delta": "Hi "},
        {
            "type": "response.output_item.added",
            "item": {"type": "function_call", "id": "fc_1", "call_id": "call_8", "name": "look"},
        },
        {
            "type": "response.function_call_arguments.delta",
            "item_id": "fc_1",
            "delta": '{"n":"A-3"}',
        },
        {
            "type": "response.completed",
            "response": {"usage": {"input_tokens": 5, "output_tokens": 6}},
        },
    ]
    translate, assembler = dialects.ResponsesChunks(), ChunkAssembler()
    for event in events:
        for chunk in translate.feed(event):
            assembler.add(chunk)
    assert translate.done and assembler.finish_reason == "tool_calls"
    assert assembler.message()["tool_calls"][0] == {
        "id": "call_8",
        "type": "function",
        "function": {"name": "look", "arguments": '{"n":"A-3"}'},
    }
    assert assembler.usage == {"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11}
    with pytest.raises(UpstreamError, match="quota"):
        dialects.ResponsesChunks().feed(
            {"type": "response.failed", "response": {"error": {"message": "quota"}}}
        )
