"""Fuzz the admin API from its own OpenAPI document with schemathesis.

Every ``/api/...`` operation of ``/openapi.json`` gets a bounded number of generated requests,
schema-conforming and not, authenticated with the admin token, against the in-process app (its
lifespan entered by schemathesis) whose actions call the local echo API. No answer may be a 5xx,
and every 4xx must be JSON in OpenAI's error shape ``{"error": {"message", "type", ...}}``.

Random JSON rarely gets past the first 404 or 422, so part of the requests
- name objects that exist in their path (``look_up_order``, ``support``, a real log id), and
- for action and agent writes, send a valid definition with one or two fields replaced by
  random JSON or a known-tricky value (templates, URLs, auth blocks), or removed,
which reaches the validation, templating and storage code behind them. Deleting operations run
last, so the objects they remove stay available to the others.

schemathesis's pytest integration (``schemathesis.pytest.from_fixture``) reads a private pytest
attribute that pytest 9 removed, so the operations are driven from ``APIOperation.as_strategy``
with Hypothesis directly, one subtest per operation and generation mode.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck
from hypothesis import strategies as st
from schemathesis import APIOperation, BaseSchema, CheckContext, GenerationMode, Response
from schemathesis import Case as AnyCase
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi

from gateway.app import create_app
from gateway.definitions.config import parse_config
from tests.support.action_api import ActionAPI, running_api
from tests.support.gateway import actions
from tests.support.serve import LoopThread
from tests.test_replicas import fresh_database

Operation = APIOperation[Any, Any, Any, Any]
Case = AnyCase[Operation]
TOKEN = "fuzz-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MAX_EXAMPLES = int(os.environ.get("ACTIONGATE_FUZZ_EXAMPLES", "12"))
"""Generated requests per operation and mode: the default keeps the file at about half a minute;
set ``ACTIONGATE_FUZZ_EXAMPLES`` (e.g. 200) for a longer hunt."""

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
TRICKY: list[Any] = [
    "",
    " ",
    "x" * 5000,
    "\x00",
    "é✓\u202e",
    "{{",
    "{{ lead.email }}",
    "{{args.order_number}}",
    "{{ secrets.CRM }}",
    "{{ ''.__class__.__mro__ }}",
    "{% for x in range(10**9) %}{% endfor %}",
    "{{ conversation.id | upper }}",
    "http://127.0.0.1:1/closed",
    "http://[::1]/x",
    "http://169.254.169.254/latest/meta-data/",
    "file:///etc/passwd",
    "javascript:alert(1)",
    "https://{{args.host}}/x",
    -1,
    0,
    10**12,
    1.5,
    True,
    [],
    {},
    [{"name": "email", "type": "email", "maps_to": "lead.email"}],
    [{"name": "1bad"}],
    {"order_number": {"type": "string", "required": True}},
    {"n": {"type": "array", "items": {"type": "object"}}},
    {"n": {"type": "integer", "enum": [1, "a"]}},
    {"type": "bearer", "token": "{{secrets.CRM}}"},
    {"type": "api_key", "name": "k", "in": "query", "value": "v"},
    {"type": "basic", "username": "u", "password": "p"},
    {"type": "oauth2_client_credentials", "token_url": "http://127.0.0.1:1/t", "client_id": "i"},
    {"type": "headers", "headers": {"X-A": "{{secrets.CRM}}"}},
    {"select": "items[*].name", "redact": ["a.b"], "max_chars": 100},
    {"select": "[[[", "max_chars": 5},
    {"navigate": "https://example.com/?e={{lead.email}}"},
    {"http": {"method": "POST", "url": "http://127.0.0.1:1/x"}},
    {"Content-Type": "application/json", "X-Api-Key": "********"},
    {"Host": "evil", "X-Bad\r\nInjected": "1"},
    "********",
    ["look_up_order"],
    ["nope"],
]
"""Values worth trying in a definition field."""
ACTION_FIELDS = [
    "name",
    "tool_name",
    "type",
    "description",
    "when_not_to_use",
    "enabled",
    "method",
    "url",
    "headers",
    "query",
    "body",
    "auth",
    "response",
    "timeout_s",
    "retries",
    "parameters",
    "confirm",
    "title",
    "fields",
    "submit",
    "label",
    "on_click",
]
DEFINITION_PATHS = (
    "/api/actions",
    "/api/actions/{tool_name}",
    "/api/agents",
    "/api/agents/{agent_id}",
)
"""Operations whose body is an action or agent definition (for ``POST``, ``PUT``, ``PATCH``)."""
WRITES = ("POST", "PUT", "PATCH")
AGENT_FIELDS = ["id", "name", "system_prompt", "upstream", "actions", "api_keys", "max_rounds"]


@dataclass
class Target:
    """The admin API under test and the names that exist in it."""

    schema: BaseSchema
    base_url: str
    """The echo API the actions call."""
    known: dict[str, list[str]]
    """Existing names by path parameter."""
    app: Any
    """The ASGI app (its lifespan runs on schemathesis's event loop thread)."""


@pytest.fixture
def action_api() -> Iterator[ActionAPI]:
    servers = LoopThread()
    try:
        yield servers.enter(running_api())
    finally:
        servers.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def target(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    action_api: ActionAPI,
) -> Iterator[Target]:
    """The admin API on SQLite, then on a fresh PostgreSQL database."""
    with ExitStack() as stack:
        if request.param == "sqlite":
            database = f"sqlite:///{tmp_path / 'fuzz.db'}"
        else:
            database = stack.enter_context(fresh_database(request.getfixturevalue("pg_url")))
        yield stack.enter_context(serving(database, monkeypatch, action_api))


@contextmanager
def serving(
    database: str, monkeypatch: pytest.MonkeyPatch, action_api: ActionAPI
) -> Iterator[Target]:
    monkeypatch.setenv("ACTIONGATE_ADMIN_TOKEN", TOKEN)
    config = parse_config(
        {
            # Nothing here calls the upstream; a closed port makes sure of it.
            "upstream": {"base_url": "http://127.0.0.1:9/v1", "model": "m"},
            "database": database,
            "egress": {"allow": ["127.0.0.1"]},
            "secrets": {"CRM": "crm-fuzz-secret"},
            "agents": [{"id": "support", "system_prompt": "Help."}],
            "actions": actions(action_api.base_url),
        },
        environ={},
    )
    app: Any = create_app(config)  # schemathesis types ASGI apps narrower than FastAPI
    try:
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)  # enters the lifespan
        with asgi.get_client(app) as client:
            seeded = client.post(
                "/api/actions/look_up_order/test",
                json={"args": {"order_number": "A-1"}},
                headers=AUTH,
            )
        assert seeded.status_code == 200, seeded.text
        known = {
            "tool_name": ["look_up_order", "get_customer_account", "return_request", "fuzz_action"],
            "agent_id": ["support", "fuzz"],
            "record_id": [seeded.json()["log_id"]],
        }
        if database.startswith("postgresql"):
            # PostgreSQL text cannot hold NUL; see test_nul_in_a_filter_is_a_client_error.
            schema.config.generation.update(allow_x00=False)
        admin = schema.include(path_regex="^/api/")
        yield Target(admin, action_api.base_url, known, app)
    finally:
        asgi.shutdown_lifespans()  # closes the database before it is removed


def mutated(base: dict[str, Any], fields: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """``base`` with one or two fields set to random or tricky values, or removed."""
    value = st.one_of(JSON, st.sampled_from(TRICKY))
    change = st.tuples(st.sampled_from(fields), st.one_of(st.just(None), value))

    def apply(changes: list[tuple[str, Any]]) -> dict[str, Any]:
        out = dict(base)
        for name, new in changes:
            if new is None:
                out.pop(name, None)
            else:
                out[name] = new
        return out

    return st.lists(change, min_size=1, max_size=2).map(apply)


def definitions(target: Target, operation: Operation) -> st.SearchStrategy[dict[str, Any]]:
    """Nearly valid action or agent definitions for a write to ``operation``."""
    if operation.path.startswith("/api/agents"):
        agent = {"id": "fuzz", "system_prompt": "Sell.", "actions": ["look_up_order"]}
        return mutated(agent, AGENT_FIELDS)
    bases = [
        *actions(target.base_url),
        {
            "name": "Fuzz Action",
            "url": f"{target.base_url}/echo/fuzz?email={{{{lead.email}}}}",
            "headers": {"X-Api-Key": "literal-key"},
            "when_not_to_use": "Never.",
        },
    ]
    return st.sampled_from(bases).flatmap(lambda base: mutated(base, ACTION_FIELDS))


def cases(target: Target, operation: Operation, mode: GenerationMode) -> st.SearchStrategy[Case]:
    """Generated cases, some with existing names in the path or nearly valid definitions."""
    names = [p.name for p in operation.path_parameters]
    combos = [
        dict(zip(names, values, strict=True))
        for values in itertools.product(*(target.known.get(n, []) for n in names))
        if values
    ]
    options = [operation.as_strategy(mode)]
    options += [operation.as_strategy(mode, path_parameters=combo) for combo in combos]
    writes = operation.path in DEFINITION_PATHS and operation.method.upper() in WRITES
    if writes and mode is GenerationMode.POSITIVE:
        path = st.sampled_from(combos) if combos else st.just({})
        options.append(
            st.tuples(path, definitions(target, operation)).flatmap(
                lambda p: operation.as_strategy(mode, path_parameters=p[0] or None, body=p[1])
            )
        )
    return st.one_of(options)


def check_error_shape(_ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """A 4xx is JSON ``{"error": {"message": str, "type": str, ...}}``."""
    if not 400 <= response.status_code < 500:
        return None
    request = f"{case.method} {case.formatted_path} {case.body!r}"
    content_type = response.headers.get("content-type", [""])[0]
    assert content_type.startswith("application/json"), f"{request}: not JSON: {content_type}"
    body = response.json()
    assert isinstance(body, dict) and isinstance(body.get("error"), dict), f"{request}: {body}"
    error = body["error"]
    assert isinstance(error.get("message"), str) and error["message"], f"{request}: {body}"
    assert isinstance(error.get("type"), str) and error["type"], f"{request}: {body}"
    return True


def fuzz(target: Target, operation: Operation, mode: GenerationMode) -> None:
    """Send up to :data:`MAX_EXAMPLES` generated requests to one operation."""

    @hypothesis.settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @hypothesis.given(case=cases(target, operation, mode))
    def run(case: Case) -> None:
        case.call_and_validate(
            headers=AUTH,
            checks=[not_a_server_error],
            additional_checks=[check_error_shape],
        )

    try:
        run()
    except hypothesis.errors.Unsatisfiable:
        # Nothing of this operation can break its schema (e.g. one free-form string path
        # parameter); schemathesis's own runner skips it the same way.
        assert mode is GenerationMode.NEGATIVE, operation.label


def test_admin_api_never_answers_a_server_error(target: Target, subtests: pytest.Subtests) -> None:
    operations = [result.ok() for result in target.schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) >= 17  # every /api operation, not an empty filter
    # Deletions last (toggles, then actions, then agents): the others find the seeded objects.
    operations.sort(
        key=lambda o: (
            o.method.upper() == "DELETE",
            -o.path.count("/"),
            o.path.startswith("/api/agents"),
        )
    )
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            with subtests.test(operation=operation.label, mode=mode.value):
                fuzz(target, operation, mode)


@pytest.mark.parametrize(
    "target", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_nul_in_a_filter_is_a_client_error(target: Target) -> None:
    with asgi.get_client(target.app) as client:
        for path, params in [
            ("/api/logs", {"action": "a\x00b"}),
            ("/api/logs", {"conversation_id": "\x00"}),
            ("/api/logs/a%00b", {}),
        ]:
            try:
                response = client.get(path, params=params, headers=AUTH)
            except Exception as e:  # the app's exception, re-raised by the test client
                pytest.fail(f"GET {path} {params}: {type(e).__name__}: {e}")
            assert 400 <= response.status_code < 500, (path, params, response.text)
            assert response.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    "target", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_nul_in_a_conversation_id_is_a_client_error(target: Target) -> None:
    body: dict[str, Any] = {
        "model": "support",
        "messages": [{"role": "user", "content": "Hi"}],
        "conversation": {"id": "conv\x00"},
    }
    with asgi.get_client(target.app) as client:
        try:
            response = client.post("/v1/chat/completions", json=body)
        except Exception as e:  # the app's exception, re-raised by the test client
            pytest.fail(f"{type(e).__name__}: {e}")
    assert 400 <= response.status_code < 500, response.text


@pytest.mark.parametrize("target", ["sqlite"], indirect=True)
def test_patch_with_another_agent_id_does_not_copy_the_agent(target: Target) -> None:
    with asgi.get_client(target.app) as client:
        client.patch("/api/agents/support", json={"id": "other"}, headers=AUTH)
        listed = client.get("/api/agents", headers=AUTH).json()["items"]
    assert [a["id"] for a in listed] in (["support"], ["other"])  # refused or renamed, not copied
