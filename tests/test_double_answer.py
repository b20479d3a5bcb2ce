"""One confirmation answered by two requests at once runs its action once.

A double click, a client's retry or two replicas: both requests load the conversation with the
confirmation pending. Before running anything, each claims the entries it answers in the store
(:meth:`ConversationStore.claim_pending`); only the claim that takes an entry out may run it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.proxy.turns import ALREADY_ANSWERED
from gateway.stores.conversations import NO_ROW, ConversationStore
from tests.support.gateway import running_gateway

PENDING = {"tool": "submit_refund", "args": {"order_number": "A-10023"}, "kind": "confirm"}


async def test_of_two_concurrent_claims_exactly_one_gets_the_entry(db_engine: AsyncEngine) -> None:
    store = ConversationStore(db_engine)
    await store.save("c1", "support", {"pending": {"call_1": PENDING, "call_2": PENDING}})
    loaded = await store.read("c1", "support")
    results = await asyncio.gather(
        *(store.claim_pending("c1", "support", ["call_1"], loaded) for _ in range(6))
    )
    winners = [claimed for claimed, _ in results if claimed]
    assert winners == [{"call_1"}]
    after = await store.read("c1", "support")
    assert after.state["pending"] == {"call_2": PENDING}  # the other entry is untouched


async def test_a_claim_of_nothing_pending_writes_nothing(db_engine: AsyncEngine) -> None:
    store = ConversationStore(db_engine)
    claimed, snapshot = await store.claim_pending("c1", "support", ["call_1"], NO_ROW)
    assert claimed == set() and snapshot == NO_ROW
    assert await store.load("c1", "support") is None


def _call(arguments: dict[str, Any]) -> dict[str, Any]:
    return {"tool_calls": [{"name": "submit_refund", "arguments": arguments, "id": "call_ok"}]}


@pytest.mark.parametrize("requests", [2, 4])
async def test_two_requests_confirming_one_refund_send_it_once(
    tmp_path: Any, requests: int
) -> None:
    async with running_gateway(tmp_path) as gw:
        conversation = {"id": "conv-double", "lead": {"email": "jane@example.com"}}
        question = {"role": "user", "content": "Refund A-10023 please"}
        arguments = {"order_number": "A-10023"}
        gw.upstream.script([_call(arguments)])
        first = await gw.chat(messages=[question], conversation=conversation)
        data = first.json()
        [ui] = data["actiongate"]["ui"]
        assert ui["kind"] == "confirm", ui
        said = data["choices"][0]["message"]
        answer = {"role": "tool", "tool_call_id": "call_ok", "content": '{"confirmed": true}'}
        gw.upstream.script([{"content": "Done."}] * requests)
        before = len(gw.api.received)
        # Every request loads the conversation before any goes on: the race, made certain.
        states = gw.services.proxy.states
        barrier, read = asyncio.Barrier(requests), states.read

        async def read_together(*args: Any) -> Any:
            loaded = await read(*args)
            await barrier.wait()
            return loaded

        states.read = read_together  # type: ignore[method-assign]
        replies = await asyncio.gather(
            *(
                gw.chat(messages=[question, said, answer], conversation=conversation)
                for _ in range(requests)
            )
        )
        assert all(r.status_code == 200 for r in replies)
        sent = gw.api.received[before:]
        assert len(sent) == 1, [f"{r.method} {r.path}" for r in sent]
        ran = [e for r in replies for e in r.json()["actiongate"]["executions"]]
        assert [e["outcome"] for e in ran] == ["success"]
        told = gw.upstream.requests[-requests:]
        already = [t for t in told if t["messages"][-1]["content"] == ALREADY_ANSWERED]
        assert len(already) == requests - 1
