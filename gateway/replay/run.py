"""Replaying a cassette through the gateway and reporting every difference.

:func:`replay` builds the app in process (:func:`~gateway.app.create_app`) with the given
config, or the one recorded in the cassette, on a temporary database, and sends the recorded
client requests in order. The upstream and the action APIs are answered from the cassette by the
transports below, installed as the ``hook`` of :class:`~gateway.net.upstream.Upstream` and
:class:`~gateway.net.outbound.Outbound`:

- :class:`ReplayUpstream` answers upstream call *k* of client request *n* with the cassette's
  exchange *k* of request *n* (a call beyond the recorded ones gets a 502);
- :class:`ReplayOutbound` matches each action request to an unused recorded one of the same
  client request (same method, URL and body; else same method and URL; else the next one with
  the same method) and answers with its recorded response or error. A request with no
  counterpart is a difference and gets a connection error (as a 599 would). An OAuth token
  request the recording did not need (its token was cached) gets a stand-in token.

Everything the gateway sent is compared with the cassette as :mod:`gateway.replay.differences`
describes; the :class:`ReplayReport` lists each difference, and ``actiongate replay`` exits 1
when there is any. Only the log rows the replayed requests made are compared (a database given
to :func:`replay` may hold older rows of the conversation).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import tempfile
from collections import deque
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

from gateway.definitions.config import Config, load_config, parse_config
from gateway.errors import ActionGateError, EgressBlocked, UpstreamError
from gateway.net.outbound import ConnectFailed, OutboundCall, OutboundResponse, SendFn
from gateway.net.upstream import CompleteFn, StreamFn, UpstreamTarget
from gateway.redaction import REDACTED, Redactor
from gateway.replay.arguments import add_replay_arguments
from gateway.replay.cassette import (
    Cassette,
    CassetteError,
    CassetteRequest,
    body_bytes,
    call_fields,
    json_copy,
    load_cassette,
    redact_action_sent,
    redact_value,
    response_fields,
)
from gateway.replay.differences import Comparison, Difference, Observation, is_token_request
from gateway.replay.recording import CHAT_PATH, recording_redactor
from gateway.stores.logs import MAX_PAGE_SIZE, ExecutionRecord

__all__ = [
    "ReplayOutbound",
    "ReplayReport",
    "ReplayUpstream",
    "add_replay_arguments",
    "main",
    "replay",
    "replay_file",
    "run_replay_command",
]


# --- transports -----------------------------------------------------------------------------


class ReplayUpstream:
    """Answers upstream call *k* of the current client request with the cassette's *k*-th."""

    def __init__(self, redactor: Redactor) -> None:
        self.redactor = redactor
        self.observations: list[Observation] = []
        self._queue: deque[dict[str, Any]] = deque()

    def load(self, step: CassetteRequest) -> None:
        """Answer from ``step``'s exchanges from now on."""
        self._queue = deque(step.upstream)
        self.observations = []

    def remaining(self) -> list[dict[str, Any]]:
        """Recorded exchanges of the current step that no call used."""
        return list(self._queue)

    def _next(self, payload: dict[str, Any], stream: bool) -> dict[str, Any]:
        recorded = self._queue.popleft() if self._queue else None
        sent = {"stream": stream, "sent": redact_value(json_copy(payload), self.redactor)}
        self.observations.append(Observation("upstream", sent, recorded))
        if recorded is None:
            raise UpstreamError(502, "replay: the cassette has no upstream exchange for this call")
        if bool(recorded.get("stream")) != stream:
            raise UpstreamError(502, "replay: the recorded exchange was streamed differently")
        return recorded

    async def complete(
        self, target: UpstreamTarget, payload: dict[str, Any], send: CompleteFn
    ) -> dict[str, Any]:
        """The recorded completion (or the recorded error)."""
        recorded = self._next(payload, stream=False)
        if recorded.get("error"):
            raise _upstream_error(recorded["error"])
        response: dict[str, Any] = json_copy(recorded.get("received") or {})
        return response

    async def stream(
        self, target: UpstreamTarget, payload: dict[str, Any], send: StreamFn
    ) -> AsyncIterator[dict[str, Any]]:
        """The recorded chunks, then the recorded error if the stream failed."""
        recorded = self._next(payload, stream=True)
        for chunk in recorded.get("chunks") or []:
            yield json_copy(chunk)
        if recorded.get("error"):
            raise _upstream_error(recorded["error"])


def _upstream_error(error: Mapping[str, Any]) -> UpstreamError:
    status, message = int(error.get("status") or 502), str(error.get("message") or "")
    return UpstreamError(status, message, str(error.get("code") or "upstream_error"))


class ReplayOutbound:
    """Answers action requests with the matching recorded exchanges of the current request."""

    def __init__(self, redactor: Redactor) -> None:
        self.redactor = redactor
        self.observations: list[Observation] = []
        self._unused: list[dict[str, Any]] = []

    def load(self, step: CassetteRequest) -> None:
        """Answer from ``step``'s exchanges from now on."""
        self._unused = list(step.actions)
        self.observations = []

    def remaining(self) -> list[dict[str, Any]]:
        """Recorded exchanges of the current step no request matched (token requests aside)."""
        return [e for e in self._unused if not is_token_request(e["sent"])]

    def _match(self, sent: dict[str, Any]) -> dict[str, Any] | None:
        for keys in (("method", "url", "body"), ("method", "url"), ("method",)):
            for exchange in self._unused:
                if all(exchange["sent"].get(k) == sent.get(k) for k in keys):
                    self._unused.remove(exchange)
                    return exchange
        return None

    async def send(self, call: OutboundCall, send: SendFn) -> OutboundResponse:
        """The recorded response of the matching exchange; a connection error when none."""
        raw = call_fields(call)
        sent = redact_action_sent(raw, self.redactor)
        recorded = self._match(sent)
        observation = Observation("action", sent, recorded)
        self.observations.append(observation)
        if recorded is None:
            if is_token_request(sent):
                observation.synthetic = True
                token = {"access_token": "replay-token", "token_type": "Bearer", "expires_in": 3600}
                ctype = {"content-type": "application/json"}
                return OutboundResponse(200, ctype, orjson.dumps(token), False, 1)
            raise ConnectFailed(
                f"replay: no recorded exchange for {call.method} {sent['url']} (599)"
            )
        error = recorded.get("error")
        if error:
            if error.get("kind") == "timeout":
                raise TimeoutError
            if error.get("kind") == "blocked":
                raise EgressBlocked(str(error.get("host") or ""), str(error.get("message") or ""))
            raise ConnectFailed(str(error.get("message") or "connection failed"))
        received = recorded["received"]
        return OutboundResponse(
            int(received["status"]),
            dict(received.get("headers") or {}),
            body_bytes(received),
            bool(received.get("truncated")),
            int(received.get("attempts") or 1),
        )


# --- comparison -----------------------------------------------------------------------------


@dataclass
class ReplayReport:
    """What a replay found."""

    cassette: str
    requests: int = 0
    upstream_calls: int = 0
    action_requests: int = 0
    differences: list[Difference] = field(default_factory=list)
    records: list[ExecutionRecord] = field(default_factory=list)
    """The log rows the replay stored, oldest first."""

    @property
    def passed(self) -> bool:
        """True when the replay matched the cassette in every compared respect."""
        return not self.differences

    def as_text(self) -> str:
        """A human-readable report: one line, then each difference."""
        counts = ", ".join(
            f"{n} {noun}{'s' * (n != 1)}"
            for n, noun in [
                (self.requests, "client request"),
                (self.upstream_calls, "upstream call"),
                (self.action_requests, "action request"),
                (len(self.records), "log row"),
            ]
        )
        if self.passed:
            return f"replay {self.cassette}: OK ({counts})\n"
        n = len(self.differences)
        lines = [f"replay {self.cassette}: FAILED, {n} difference{'s' * (n != 1)} ({counts})"]
        lines += [d.describe() for d in self.differences]
        return "\n".join(lines) + "\n"

    def as_json(self) -> dict[str, Any]:
        """The report as one JSON-ready object."""
        return {
            "cassette": self.cassette,
            "passed": self.passed,
            "requests": self.requests,
            "upstream_calls": self.upstream_calls,
            "action_requests": self.action_requests,
            "differences": [d.as_dict() for d in self.differences],
            "records": [r.to_dict() for r in self.records],
        }

    def assert_passed(self) -> None:
        """Raise AssertionError carrying :meth:`as_text` when anything differed."""
        if not self.passed:
            raise AssertionError(self.as_text())


# --- running ----------------------------------------------------------------------------------


def _replay_config(cassette: Cassette, config: Config | str | Path | None) -> Config:
    if isinstance(config, Config):
        chosen = config.model_copy(deep=True)
    elif config is not None:
        chosen = load_config(config)
    elif cassette.config is not None:
        chosen = parse_config(cassette.config, environ={})
    else:
        raise CassetteError(f"{cassette.path or 'cassette'} records no config; pass one")
    for agent in chosen.agents:
        # Recorded client keys are redacted; accept the redacted form instead of the real one.
        agent.api_keys = [REDACTED] if agent.api_keys else []
    return chosen


def _client_request(step: CassetteRequest, conversation_id: str) -> tuple[bytes, dict[str, str]]:
    request = step.request
    headers = {str(k): str(v) for k, v in (request.get("headers") or {}).items()}
    if headers.get("authorization") == REDACTED:
        headers["authorization"] = f"Bearer {REDACTED}"
    body = request.get("body")
    given = body.get("conversation") if isinstance(body, dict) else None
    if not (isinstance(given, dict) and given.get("id")) and not headers.get("x-conversation-id"):
        # A conversation that began without an id keeps the recorded one, so ids line up.
        headers["x-conversation-id"] = conversation_id
    headers.setdefault("content-type", "application/json")
    if "body" in request:
        return orjson.dumps(body), headers
    return str(request.get("body_text") or "").encode(), headers


@contextmanager
def _quiet_admin_token() -> Iterator[None]:
    """Start-up prints a new admin token unless one is set; a replay needs none."""
    if os.environ.get("ACTIONGATE_ADMIN_TOKEN"):
        yield
        return
    os.environ["ACTIONGATE_ADMIN_TOKEN"] = secrets.token_urlsafe(16)
    try:
        yield
    finally:
        os.environ.pop("ACTIONGATE_ADMIN_TOKEN", None)


@asynccontextmanager
async def _started(config: Config, database: str | None) -> AsyncIterator[Any]:
    from gateway.app import create_app  # the app imports much; only a replay needs it

    with tempfile.TemporaryDirectory(prefix="actiongate-replay-") as tmp:
        app = create_app(config, database=database or f"sqlite:///{Path(tmp) / 'replay.db'}")
        async with AsyncExitStack() as stack:
            with _quiet_admin_token():
                await stack.enter_async_context(app.router.lifespan_context(app))
            yield app


async def replay(
    cassette: Cassette | str | Path,
    config: Config | str | Path | None = None,
    *,
    database: str | None = None,
) -> ReplayReport:
    """Replay a cassette through an in-process gateway and compare everything it sent.

    Args:
        cassette: A parsed cassette or its path.
        config: The config (or config file) to replay with; default: the recorded one.
        database: Log database URL; default: a temporary SQLite file.

    Raises:
        CassetteError: the cassette cannot be read or records no config.
        ConfigError: the config is invalid.
    """
    tape = cassette if isinstance(cassette, Cassette) else load_cassette(cassette)
    report = ReplayReport(str(tape.path or tape.conversation_id), len(tape.requests))
    compare = Comparison()
    async with _started(_replay_config(tape, config), database) as app:
        services = app.state.services
        store = services.runtime.logstore
        query = {"conversation_id": tape.conversation_id, "limit": MAX_PAGE_SIZE}
        before = {r.id for r in (await store.query(**query))[0]}
        redactor = recording_redactor(services)
        upstream, outbound = ReplayUpstream(redactor), ReplayOutbound(redactor)
        services.upstream.hook, services.runtime.outbound.hook = upstream, outbound
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://replay") as client:
            for step in tape.requests:
                upstream.load(step)
                outbound.load(step)
                content, headers = _client_request(step, tape.conversation_id)
                response = await client.post(CHAT_PATH, content=content, headers=headers)
                replayed = response_fields(response.status_code, response.content)
                compare.actions(step.index, outbound.observations, outbound.remaining())
                compare.upstream(step.index, upstream.observations, upstream.remaining())
                compare.response(step.index, step.response, redact_value(replayed, redactor))
                report.upstream_calls += len(upstream.observations)
                report.action_requests += len(outbound.observations)
        await store.flush()
        records, _ = await store.query(**query)
    report.records = [r for r in reversed(records) if r.id not in before]
    rows = [redact_value(r.to_dict(), redactor) for r in report.records]
    compare.rows(tape.executions, rows)
    report.differences = compare.differences
    return report


def replay_file(
    cassette: str | Path, config: Config | str | Path | None = None, **options: Any
) -> ReplayReport:
    """:func:`replay` for synchronous callers (in a thread of its own under a running loop)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(replay(cassette, config, **options))
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, replay(cassette, config, **options)).result()


def _cassettes(paths: Sequence[str | Path]) -> list[Path]:
    found: list[Path] = []
    for item in map(Path, paths):
        found += sorted(item.glob("*.jsonl")) if item.is_dir() else [item]
    if not found:
        raise CassetteError(f"no cassettes (*.jsonl) in {', '.join(map(str, paths))}")
    return found


def run_replay_command(
    cassettes: Sequence[str | Path], *, config: str | None = None, as_json: bool = False
) -> int:
    """``actiongate replay CASSETTE... [--config FILE] [--json]``: 0 when every replay matched.

    Raises:
        ActionGateError: a cassette or the config cannot be used (the CLI exits 1).
    """
    chosen = load_config(config) if config else None
    passed = True
    for path in _cassettes(cassettes):
        report = replay_file(path, chosen)
        passed &= report.passed
        if as_json:
            sys.stdout.write(orjson.dumps(report.as_json()).decode() + "\n")
        else:
            sys.stdout.write(report.as_text())
    return 0 if passed else 1


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m gateway.replay``: the same as ``actiongate replay``."""
    parser = argparse.ArgumentParser(prog="actiongate replay", description=__doc__.splitlines()[0])
    add_replay_arguments(parser)
    ns = parser.parse_args(argv)
    try:
        return run_replay_command(ns.cassette, config=ns.config, as_json=ns.json)
    except ActionGateError as e:
        sys.stderr.write(f"error: {e}\n")
        return 1
