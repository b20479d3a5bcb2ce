"""Issue 12, item 29: a cassette recorded on a conversation that already had executions replays.

The conversation gets rows the recording never saw (a request served without the recorder, as
an earlier ``serve`` on the same database or an unrecorded front would make), then recorded
requests. The cassette holds only the recorded requests' rows, a replay compares only the rows
it made, and so it passes; before, it failed with "recorded row missing after the replay".
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from examples.customer_api import running_customer_api
from examples.record_cassettes import JANE, chat, demo_config
from examples.scripted_upstream import running_upstream
from gateway.app import create_app
from gateway.replay.cassette import cassette_path, load_cassette
from gateway.replay.recording import Recorder
from gateway.replay.run import replay

CONVERSATION: dict[str, Any] = {"id": "already-busy", "lead": JANE}
ORDER = [{"role": "user", "content": "Where is my order A-10023?"}]
PLAN = [{"role": "user", "content": "Which plan am I on? I am jane@example.com"}]


@dataclass
class Gateway:
    """One in-process gateway on one database, reachable with and without recording."""

    app: Any
    database: str
    cassettes: Path

    def client(self, recorder: Recorder | None) -> httpx.AsyncClient:
        """A client of the bare app, or of the app wrapped by ``recorder``."""
        app = self.app if recorder is None else recorder.wrap(self.app)
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw")

    async def say(self, recorder: Recorder | None, messages: list[dict[str, Any]]) -> None:
        """One chat request in the conversation, recorded when ``recorder`` is given."""
        async with self.client(recorder) as client:
            await chat(client, CONVERSATION, messages)

    async def actions(self) -> list[str]:
        """The tools of the conversation's stored rows, oldest first."""
        store = self.app.state.services.runtime.logstore
        await store.flush()
        records, _ = await store.query(conversation_id=CONVERSATION["id"], limit=100)
        return [r.action for r in reversed(records)]


@asynccontextmanager
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    database = f"sqlite:///{tmp_path / 'record.db'}"
    async with (
        running_customer_api() as api,
        running_upstream(rules=True, api_key="demo-upstream-key") as upstream,
    ):
        app = create_app(demo_config(upstream.base_url, api.base_url, database))
        async with app.router.lifespan_context(app):
            yield Gateway(app, database, tmp_path / "cassettes")


def _recorded_actions(path: Path) -> list[list[str]]:
    lines = [step.executions or [] for step in load_cassette(path).requests]
    return [[r["action"] for r in rows] for rows in lines]


async def test_rows_from_before_the_recording_are_neither_recorded_nor_compared(
    tmp_path: Path,
) -> None:
    async with gateway(tmp_path) as gw:
        await gw.say(None, ORDER)  # not recorded: the conversation already has a row
        await gw.say(Recorder(gw.cassettes), PLAN)
        assert await gw.actions() == ["look_up_order", "get_customer_account"]
        database = gw.database
        path = cassette_path(gw.cassettes, CONVERSATION["id"])
        assert _recorded_actions(path) == [["get_customer_account"]]

        report = await replay(path)
        assert report.passed, report.as_text()
        assert [(r.action, r.outcome) for r in report.records] == [
            ("get_customer_account", "success")
        ]
    # A replay on a database that holds the older rows compares only the rows it made.
    report = await replay(path, database=database)
    assert report.passed, report.as_text()
    assert [r.action for r in report.records] == ["get_customer_account"]


async def test_a_cassette_extended_later_keeps_only_recorded_rows(tmp_path: Path) -> None:
    async with gateway(tmp_path) as gw:
        await gw.say(None, ORDER)
        await gw.say(Recorder(gw.cassettes), PLAN)
        await gw.say(None, ORDER)  # served without recording between two recordings
        # A new recorder (a new `serve --record`) reads the recorded rows back from the file.
        await gw.say(Recorder(gw.cassettes), ORDER)
        assert await gw.actions() == [
            "look_up_order",
            "get_customer_account",
            "look_up_order",
            "look_up_order",
        ]
        path = cassette_path(gw.cassettes, CONVERSATION["id"])
        assert _recorded_actions(path) == [
            ["get_customer_account"],
            ["get_customer_account", "look_up_order"],
        ]
    report = await replay(path)
    assert report.passed, report.as_text()
    assert report.requests == 2
    assert [r.action for r in report.records] == ["get_customer_account", "look_up_order"]
