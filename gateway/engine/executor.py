"""Run one tool call as one HTTP request and one log record.

The steps, in order (each failure is a *result*: a record and a message the model reads):

1. parse the model's arguments strictly (:mod:`gateway.engine.arguments`)          → ``rejected``
2. render the request, escaping each value for where it lands
   (:mod:`gateway.engine.rendering`); a missing required value stops here           → ``rejected``
3. apply credentials (:mod:`gateway.engine.auth`), registering derived secrets, what the
   templates' filters made of secrets, and every value sent under a credential name with this
   execution's redactor; an OAuth token that cannot be had ends the call   → ``blocked``,
                                                                               ``timeout``,
                                                                               ``connect_error``
4. send through the one outbound client (:mod:`gateway.net.outbound`): egress
   guard, deadline, retries, size cap                                        → ``blocked``,
                                                                               ``timeout``,
                                                                               ``connect_error``
5. trim the response for the model (:mod:`gateway.engine.trimming`)                 → ``success`` /
                                                                               ``http_error``
   (a body that cannot be decoded is an ``http_error`` too)
6. redact and submit the record (:mod:`gateway.stores.logs`): bodies are redacted (by key name
   and by value) *before* they are cut to :data:`STORED_BODY_CAP`, so a cut cannot leave a
   secret's remainder behind.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from gateway.definitions.actions import HttpAction, HttpRequest
from gateway.engine.arguments import parse_arguments
from gateway.engine.auth import (
    OAUTH_GRANTS,
    AuthError,
    OAuthTokens,
    apply_auth,
    bearer_token,
    secret_forms,
)
from gateway.engine.context import Conversation
from gateway.engine.limits import ActionLimits, Limits
from gateway.engine.rendering import RenderedRequest, render_request
from gateway.engine.trimming import error_message, http_error_message, trim_result
from gateway.errors import EgressBlocked, ExecutionRefused
from gateway.net.outbound import ConnectFailed, Outbound, OutboundResponse, UndecodableBody
from gateway.redaction import Redactor
from gateway.stores.logs import ExecutionRecord, LogStore, Outcome, new_record
from gateway.telemetry import metrics, tracing

__all__ = ["STORED_BODY_CAP", "Execution", "Executor"]

actions_log = logging.getLogger("actiongate.actions")
"""One ``info`` line per logged action call (``serve --log-level info``)."""

STORED_BODY_CAP = 64 * 1024
"""Longest request/response body kept in a log record (characters)."""
_BLOCKED = "its destination is not allowed by the gateway's network policy"
_NO_TOKEN = {
    "blocked": "the API's credentials could not be obtained: its token endpoint is not allowed "
    "by the gateway's network policy",
    "timeout": "the API's credentials could not be obtained: its token endpoint did not answer "
    "in time",
    "connect_error": "the API's credentials could not be obtained",
}


@dataclass(slots=True)
class Execution:
    """The result of one tool call."""

    record: ExecutionRecord
    content: str
    """Exactly what the model is (or would be) given."""
    dry_run: bool = False

    @property
    def outcome(self) -> Outcome:
        """How the execution ended."""
        return self.record.outcome

    @property
    def ok(self) -> bool:
        """True for a 2xx response (or a rendered dry run)."""
        return self.record.outcome == "success"


@dataclass(slots=True)
class _Run:
    """What one execution carries from step to step."""

    tool: str
    conversation: Conversation | None
    tool_call_id: str | None
    started: float
    redactor: Redactor
    rendered: RenderedRequest | None = None


def _cap(text: str) -> tuple[str, bool]:
    # Only ever applied to redacted text: a cut through a secret would keep all but its end.
    if len(text) <= STORED_BODY_CAP:
        return text, False
    return text[:STORED_BODY_CAP], True


def _content_type(headers: Mapping[str, str]) -> str:
    return next((v for k, v in headers.items() if k.lower() == "content-type"), "")


class Executor:
    """Executes actions; owns nothing but borrowed parts, so tests can inject each one."""

    def __init__(
        self,
        outbound: Outbound,
        *,
        secrets: Mapping[str, str] | None = None,
        logstore: LogStore | None = None,
        redactor: Redactor | None = None,
        oauth: OAuthTokens | None = None,
        limits: ActionLimits | None = None,
    ) -> None:
        self.outbound = outbound
        self.limits: ActionLimits = limits or Limits()
        self.secrets = dict(secrets or {})
        self.logstore = logstore
        self.redactor = redactor or Redactor()
        for value in self.secrets.values():
            if value:
                self.redactor.add_secret(value)
        self.oauth = oauth or OAuthTokens(outbound.post_form)

    def without_log(self) -> Executor:
        """A copy sharing every part but the log store: nothing it runs reaches the log.

        Dry runs and health checks use it; the executor logs refusals itself, so only a copy
        without a store is sure to log nothing.
        """
        unlogged = copy.copy(self)
        unlogged.logstore = None
        return unlogged

    # --- entry points ---------------------------------------------------------------------

    async def execute_action(
        self,
        action: HttpAction,
        conversation: Conversation,
        arguments: str | Mapping[str, Any] | None,
        *,
        tool_call_id: str | None = None,
        dry_run: bool = False,
    ) -> Execution:
        """Parse the model's arguments, then run the action's request."""
        started = time.perf_counter()
        try:
            args = parse_arguments(arguments, action.parameters, tool=action.tool_name)
        except ExecutionRefused as e:
            return self.refuse(
                action.tool_name,
                str(e),
                conversation,
                tool_call_id=tool_call_id,
                started=started,
                method=action.method,
                url=action.url,
            )
        required = [name for name, p in action.parameters.items() if p.required]
        return await self.execute_request(
            action,
            tool=action.tool_name,
            conversation=conversation,
            values=conversation.values(args=args, secrets=self.secrets),
            required_args=required,
            tool_call_id=tool_call_id,
            dry_run=dry_run,
            started=started,
        )

    async def execute_request(
        self,
        request: HttpRequest,
        *,
        tool: str,
        conversation: Conversation,
        values: Mapping[str, Any],
        required_args: Iterable[str] = (),
        tool_call_id: str | None = None,
        dry_run: bool = False,
        started: float | None = None,
    ) -> Execution:
        """Render, send, trim and log one request (a form's submit and a button's click too)."""
        run = _Run(
            tool,
            conversation,
            tool_call_id,
            time.perf_counter() if started is None else started,
            self.redactor.child(),
        )
        with tracing.action_span(tool, tool_call_id) as span:
            execution = await self._execute_request(request, run, values, required_args, dry_run)
            tracing.action_done(span, execution.record.outcome, execution.record.response)
        return execution

    async def _execute_request(
        self,
        request: HttpRequest,
        run: _Run,
        values: Mapping[str, Any],
        required_args: Iterable[str],
        dry_run: bool,
    ) -> Execution:
        tool = run.tool
        try:
            run.rendered = render_request(request, values, required_args=required_args)
            if dry_run and isinstance(request.auth, OAUTH_GRANTS):
                # A preview must not reach the token endpoint (nor anything else).
                run.rendered.headers["Authorization"] = "Bearer (OAuth token, fetched when sent)"
            elif request.auth is not None:
                await apply_auth(
                    request.auth,
                    run.rendered,
                    values,
                    oauth=self.oauth,
                    secret_sink=run.redactor.add_secret,
                )
        except ExecutionRefused as e:
            return self._refused(run, str(e), "rejected", request.method, request.url)
        except AuthError as e:
            content = error_message(tool, _NO_TOKEN[e.outcome])
            return self._finish(run, None, e.outcome, content, str(e))
        rendered = run.rendered
        for form in secret_forms(request, values):
            run.redactor.add_secret(form)
        # A literal credential in the definition is no registered secret, yet an API may echo it.
        run.redactor.add_named_credentials(
            rendered.headers, rendered.url, rendered.body_text, _content_type(rendered.headers)
        )
        if request.propagate_trace:
            tracing.inject(rendered.headers)  # the current span is this call's
        if rendered.method != "GET" and not any(
            k.lower() == "idempotency-key" for k in rendered.headers
        ):
            # One key per execution, the same on every retry, so a repeated POST is recognisable.
            rendered.headers["Idempotency-Key"] = uuid.uuid4().hex
        if dry_run:
            content = "(dry run: the request was rendered but not sent)"
            execution = self._finish(run, None, "success", content, submit=False)
            execution.dry_run = True
            return execution
        return await self._send(request, run, values)

    def refuse(
        self,
        tool: str,
        reason: str,
        conversation: Conversation | None,
        *,
        tool_call_id: str | None = None,
        started: float | None = None,
        outcome: Outcome = "rejected",
        method: str = "",
        url: str = "",
    ) -> Execution:
        """Record a call that was not sent (unknown tool, bad arguments, missing value)."""
        started = time.perf_counter() if started is None else started
        run = _Run(tool, conversation, tool_call_id, started, self.redactor)
        return self._refused(run, reason, outcome, method, url)

    async def mark_injected(self, execution: Execution, content: str | None = None) -> None:
        """Record that the result reached the model (upserts the same record)."""
        record = replace(
            execution.record,
            injected=True,
            injected_content=execution.content if content is None else content,
        )
        execution.record = record
        if self.logstore is not None:
            self.logstore.submit(record)

    # --- internals ------------------------------------------------------------------------

    def _refused(
        self, run: _Run, reason: str, outcome: Outcome, method: str, url: str
    ) -> Execution:
        request: dict[str, Any] = {
            "method": method,
            "url": run.redactor.redact_url(url),
            "headers": {},
            "body": None,
        }
        content = error_message(run.tool, reason)
        return self._finish(run, None, outcome, content, reason, request=request)

    async def _send(self, request: HttpRequest, run: _Run, values: Mapping[str, Any]) -> Execution:
        tool = run.tool
        deadline = asyncio.get_running_loop().time() + request.timeout_s
        # A conversation belongs to its agent: the same id on another agent has its own budget.
        conversation = run.conversation
        rate_key = f"{conversation.agent_id or ''}\x00{conversation.id}" if conversation else None
        permit = await self.limits.acquire(tool, rate_key)
        if isinstance(permit, str):
            return self._finish(run, None, "rejected", error_message(tool, permit), permit)
        failed = False  # a cancelled call says nothing about the API's health
        try:
            execution = await self._send_permitted(request, run, values, deadline)
            failed = execution.outcome in {"timeout", "connect_error"} or (
                execution.record.response is not None
                and execution.record.response["status_code"] >= 500
            )
            return execution
        finally:
            await self.limits.release(permit, failed=failed)

    async def _send_permitted(
        self, request: HttpRequest, run: _Run, values: Mapping[str, Any], deadline: float
    ) -> Execution:
        rendered = run.rendered
        assert rendered is not None
        tool = run.tool
        try:
            response = await self.outbound.send(rendered.call(deadline, request.attempts))
            if response.status == 401 and isinstance(request.auth, OAUTH_GRANTS):
                response = await self._retry_after_401(request, run, values, deadline)
        except EgressBlocked as e:
            return self._finish(run, None, "blocked", error_message(tool, _BLOCKED), str(e))
        except TimeoutError:
            reason = f"the API did not answer within {request.timeout_s:g} seconds"
            return self._finish(run, None, "timeout", error_message(tool, reason), reason)
        except UndecodableBody as e:
            reason = f"the API's answer could not be read ({e.reason})"
            content = error_message(tool, reason, sent=True)
            empty = OutboundResponse(e.status, {}, b"", False, 1)
            return self._finish(run, empty, "http_error", content, str(e))
        except AuthError as e:
            content = error_message(tool, _NO_TOKEN[e.outcome])
            return self._finish(run, None, e.outcome, content, str(e))
        except ConnectFailed as e:
            content = error_message(tool, "the API could not be reached")
            return self._finish(run, None, "connect_error", content, str(e))
        redactor = run.redactor
        options: dict[str, Any] = {
            "action": tool,
            "status": response.status,
            "body": response.body,
            "content_type": response.headers.get("content-type", ""),
            "spec": request.response,
            "truncated": response.truncated,
            "redact_text": redactor.redact_cut if response.truncated else redactor.redact_text,
            "redact_json": redactor.redact_json,
        }
        if 200 <= response.status < 300:
            return self._finish(run, response, "success", trim_result(**options))
        content = http_error_message(**options, location=response.headers.get("location"))
        return self._finish(run, response, "http_error", content, f"HTTP {response.status}")

    async def _retry_after_401(
        self, request: HttpRequest, run: _Run, values: Mapping[str, Any], deadline: float
    ) -> OutboundResponse:
        """A 401 with OAuth: drop the token (once for all concurrent callers) and try again."""
        assert isinstance(request.auth, OAUTH_GRANTS) and run.rendered is not None
        rendered = run.rendered
        stale = bearer_token(rendered) or ""
        await self.oauth.invalidate(request.auth, values, stale)
        await apply_auth(
            request.auth, rendered, values, oauth=self.oauth, secret_sink=run.redactor.add_secret
        )
        return await self.outbound.send(rendered.call(deadline))

    def _finish(
        self,
        run: _Run,
        response: OutboundResponse | None,
        outcome: Outcome,
        content: str,
        error: str | None = None,
        *,
        request: dict[str, Any] | None = None,
        submit: bool = True,
    ) -> Execution:
        redactor = run.redactor
        if request is None:
            request = {"method": "", "url": "", "headers": {}, "body": None}
            if (rendered := run.rendered) is not None:
                body = rendered.body_text
                if body is not None:
                    body, _ = _cap(redactor.redact_body(body, _content_type(rendered.headers)))
                request = {
                    "method": rendered.method,
                    "url": redactor.redact_url(rendered.url),
                    "headers": redactor.redact_headers(rendered.headers),
                    "body": body,
                }
        response_record = None
        if response is not None:
            text = response.body.decode("utf-8", errors="replace")
            text = redactor.redact_body(text, response.headers.get("content-type", ""))
            if response.truncated:
                text = redactor.redact_cut(text)  # no secret's beginning left at the wire cut
            text, cut = _cap(text)
            response_record = {
                "status_code": response.status,
                "body": text,
                "truncated": response.truncated or cut,
            }
        conversation = run.conversation
        record = new_record(
            action=run.tool,
            outcome=outcome,
            request=request,
            response=response_record,
            duration_ms=round((time.perf_counter() - run.started) * 1000, 3),
            agent_id=conversation.agent_id if conversation else None,
            conversation_id=conversation.id if conversation else None,
            tool_call_id=run.tool_call_id,
            error=None if error is None else redactor.redact_text(error),
        )
        if submit and self.logstore is not None:
            self.logstore.submit(record)
            metrics.action_call(run.tool, record.agent_id, outcome, record.duration_ms / 1000)
            if actions_log.isEnabledFor(logging.INFO):
                actions_log.info(
                    "%s %s",
                    run.tool,
                    outcome,
                    extra={
                        "action": run.tool,
                        "outcome": outcome,
                        "ms": record.duration_ms,
                        "agent": record.agent_id,
                        "conversation_id": record.conversation_id,
                    },
                )
        return Execution(record, content)
