"""``import-openapi`` on two real documents, each action run once (issue 16).

- OpenAPI's own ``petstore-expanded`` example (Apache-2.0, tests/openapi/vendor/README.md),
  against the local action API, which records the method, path, query and body it received.
- A FastAPI app whose endpoints depend on ``OAuth2PasswordBearer`` (the default that made 31 of
  36 operations of one project's spec unusable), served by uvicorn: FastAPI itself checks the
  bearer token, the query and the body every imported action sends.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs

import pytest
from fastapi import Depends, FastAPI, Form, HTTPException, Query
from fastapi.security import OAuth2PasswordBearer
from pydantic import BaseModel, Field

from adapters import FORMATS, export_tools
from gateway.definitions.config import Config
from gateway.definitions.tools import to_tool_definitions
from gateway.importers.openapi import import_openapi
from gateway.net.egress import EgressPolicy
from gateway.net.outbound import Outbound
from tests.support.action_api import ActionAPI, running_api
from tests.test_openapi_import import Seen, recording, reload, runner, serving, tools

VENDOR = Path(__file__).parent / "openapi" / "vendor"


@pytest.fixture
async def api() -> AsyncIterator[ActionAPI]:
    async with running_api() as state:
        yield state


@pytest.fixture
async def outbound() -> AsyncIterator[Outbound]:
    client = Outbound(EgressPolicy(["127.0.0.1"]))
    yield client
    await client.close()


def _objects(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if node.get("type") == "OBJECT":
            yield node
        for value in node.values():
            yield from _objects(value)
    elif isinstance(node, list):
        for value in node:
            yield from _objects(value)


def check_exports(config: Config) -> None:
    """Every format exports every tool; Gemini's has no OBJECT without properties."""
    definitions = to_tool_definitions(config.actions)
    for fmt in FORMATS:
        exported = json.dumps(export_tools(definitions, fmt))
        for action in config.actions:
            assert action.tool_name in exported, (fmt, action.tool_name)
    gemini = export_tools(definitions, "gemini")
    assert all(o.get("properties") for o in _objects(gemini))


# --- petstore-expanded ---------------------------------------------------------------------------


async def test_petstore_expanded_imports_every_operation_and_runs_each(
    api: ActionAPI, outbound: Outbound
) -> None:
    result = import_openapi(
        str(VENDOR / "petstore_expanded.yaml"), base_url=api.base_url + "/echo/api"
    )
    assert result.skipped == []
    config = reload(result, {})
    actions = tools(config)
    assert set(actions) == {"find_pets", "add_pet", "find_pet_by_id", "delete_pet"}
    check_exports(config)
    run = runner(outbound, config)

    done = await run(actions["find_pets"], {"tags": ["dog", "cat"], "limit": 2})
    assert done.outcome == "success", done.content
    got = api.last()
    assert (got.method, got.path) == ("GET", "/echo/api/pets")
    # style: form, explode: true (the default): one pair per item
    assert parse_qs(got.query_string) == {"tags": ["dog", "cat"], "limit": ["2"]}

    done = await run(actions["add_pet"], {"name": "Rex"})
    assert done.outcome == "success", done.content
    got = api.last()
    assert (got.method, got.path) == ("POST", "/echo/api/pets")
    assert got.headers["Content-Type"] == "application/json"
    assert json.loads(got.body) == {"name": "Rex"}  # the optional tag left out, not null

    for tool, method in (("find_pet_by_id", "GET"), ("delete_pet", "DELETE")):
        done = await run(actions[tool], {"id": 42})
        assert done.outcome == "success", done.content
        assert (api.last().method, api.last().path) == (method, "/echo/api/pets/42")

    refused = await run(actions["add_pet"], {"tag": "no name"})
    assert refused.outcome == "rejected" and "name" in refused.content


# --- a FastAPI app on OAuth2PasswordBearer --------------------------------------------------------

USER_TOKEN = "user-access-token-0123456789"


class Ticket(BaseModel):
    subject: str = Field(description="One line summary.", max_length=120)
    body: str
    priority: int = Field(default=0, ge=0, le=3)


SCHEME = OAuth2PasswordBearer(tokenUrl="token")


def current_user(token: Annotated[str, Depends(SCHEME)]) -> str:
    if token != USER_TOKEN:
        raise HTTPException(401, "bad token")
    return "ana"


User = Annotated[str, Depends(current_user)]


def build_helpdesk(calls: list[tuple[str, Any]]) -> FastAPI:
    """A helpdesk API: every endpoint but the token one needs the user's bearer token."""
    app = FastAPI(title="Helpdesk", version="1.0")

    @app.post("/token")
    def login(username: Annotated[str, Form()], password: Annotated[str, Form()]) -> dict[str, str]:
        calls.append(("login", username))
        return {"access_token": USER_TOKEN, "token_type": "bearer"}

    @app.get("/tickets", summary="List my tickets")
    def list_tickets(
        who: User, status: Annotated[str | None, Query()] = None, limit: int = 20
    ) -> list[dict[str, Any]]:
        calls.append(("list", (who, status, limit)))
        return []

    @app.post("/tickets", summary="Open a ticket")
    def open_ticket(who: User, ticket: Ticket) -> dict[str, Any]:
        calls.append(("open", (who, ticket.model_dump())))
        return {"id": 7}

    @app.get("/tickets/{ticket_id}", summary="Get a ticket")
    def get_ticket(who: User, ticket_id: int) -> dict[str, Any]:
        calls.append(("get", (who, ticket_id)))
        return {"id": ticket_id}

    @app.patch("/tickets/{ticket_id}", summary="Change a ticket's priority")
    def reprioritise(who: User, ticket_id: int, priority: int) -> dict[str, Any]:
        calls.append(("priority", (who, ticket_id, priority)))
        return {"id": ticket_id, "priority": priority}

    @app.delete("/tickets/{ticket_id}", summary="Close a ticket")
    def close_ticket(who: User, ticket_id: int) -> dict[str, Any]:
        calls.append(("close", (who, ticket_id)))
        return {"closed": True}

    return app


async def test_fastapi_oauth2_password_bearer_imports_every_operation(
    tmp_path: Path, outbound: Outbound
) -> None:
    calls: list[tuple[str, Any]] = []
    seen: list[Seen] = []
    app = build_helpdesk(calls)
    spec = tmp_path / "openapi.json"
    spec.write_text(json.dumps(app.openapi()))
    async with serving(recording(app, seen)) as base:
        result = import_openapi(str(spec), base_url=base)
        assert result.skipped == [], result.skipped
        assert len(result.config["actions"]) == 6
        config = reload(result, {"OAUTH2_PASSWORD_BEARER": USER_TOKEN})
        actions = tools(config)
        check_exports(config)
        run = runner(outbound, config)
        by_summary = {a.name: a for a in actions.values()}
        steps: list[tuple[str, dict[str, Any], tuple[str, Any]]] = [
            ("List my tickets", {"status": "open"}, ("list", ("ana", "open", 20))),
            (
                "Open a ticket",
                {"subject": "Parcel lost", "body": "Order A-1 never came."},
                (
                    "open",
                    (
                        "ana",
                        {"subject": "Parcel lost", "body": "Order A-1 never came.", "priority": 0},
                    ),
                ),
            ),
            ("Get a ticket", {"ticket_id": 7}, ("get", ("ana", 7))),
            (
                "Change a ticket's priority",
                {"ticket_id": 7, "priority": 2},
                ("priority", ("ana", 7, 2)),
            ),
            ("Close a ticket", {"ticket_id": 7}, ("close", ("ana", 7))),
        ]
        for name, args, call in steps:
            done = await run(by_summary[name], args)
            assert done.outcome == "success", (name, done.content)
            assert calls[-1] == call
            assert seen[-1].headers["authorization"] == f"Bearer {USER_TOKEN}"
        login = next(a for a in actions.values() if a.method == "POST" and a.url.endswith("/token"))
        done = await run(login, {"username": "ana", "password": "pw-123456"})
        assert done.outcome == "success", done.content
        assert calls[-1] == ("login", "ana")
        assert seen[-1].headers["content-type"] == "application/x-www-form-urlencoded"
        assert "authorization" not in seen[-1].headers  # the token endpoint needs no token
