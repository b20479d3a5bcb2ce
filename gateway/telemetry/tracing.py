"""OpenTelemetry traces: a span per client request, ``chat {model}`` per upstream call and
``execute_tool {tool}`` per action call, with the GenAI semantic-convention attributes.

Configured by the standard variables: tracing is on when ``OTEL_TRACES_EXPORTER`` is set —
``console`` (spans printed), ``otlp`` (OTLP over HTTP to ``OTEL_EXPORTER_OTLP_ENDPOINT``; the
``otlp`` extra) or ``none`` — and off when it is unset or ``OTEL_SDK_DISABLED=true``. With
``none`` no span is recorded (nothing would ever read it; recording one costs the SDK about
45 µs): the trace context is still continued, so an action with ``propagate_trace`` passes the
client's ``traceparent`` on. ``OTEL_SERVICE_NAME`` names the service (default
``actiongate``). Unlike the SDK's own default (``otlp``), unset means off: a gateway should not
start sending data anywhere unasked.

A client's W3C ``traceparent`` is continued (:func:`request_span`); an action whose definition
says ``propagate_trace: true`` sends the current one to its API (:func:`inject`).

Attributes carry ids, names, counts, statuses and outcomes only: never a message, an argument
value, a header or a URL with its query (which may hold a secret or a customer's data).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from gateway.errors import ConfigError
from gateway.extras import require_extra

if TYPE_CHECKING:  # the SDK is imported only when tracing is switched on
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

__all__ = [
    "EXPORTERS",
    "action_done",
    "action_span",
    "configure",
    "enabled",
    "end_upstream",
    "failed",
    "inject",
    "install",
    "request_done",
    "request_span",
    "start_upstream",
]

EXPORTERS = ("console", "otlp", "none")
_PROPAGATOR = TraceContextTextMapPropagator()
_tracer: Tracer | None = None
_propagate = False


def _exporter(name: str) -> SpanExporter | None:
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if name == "otlp":
        require_extra("opentelemetry.exporter.otlp", "otlp", "OTEL_TRACES_EXPORTER=otlp")
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()  # reads OTEL_EXPORTER_OTLP_ENDPOINT and friends
    return None


def configure(environ: Mapping[str, str] = os.environ) -> bool:
    """Set tracing up from the ``OTEL_*`` variables; whether it is on.

    Raises:
        ConfigError: an exporter this gateway does not know, or ``otlp`` without its extra.
    """
    name = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if not name or environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        install(None)
        return False
    if name not in EXPORTERS:
        choices = ", ".join(EXPORTERS)
        raise ConfigError(f"OTEL_TRACES_EXPORTER={name[:32]!r} is not supported: use {choices}")
    if name == "none":
        install(None, propagate=True)
        return True
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    service = environ.get("OTEL_SERVICE_NAME") or "actiongate"
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    exporter = _exporter(name)
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    install(provider)
    return True


def install(provider: TracerProvider | None, *, propagate: bool = False) -> None:
    """Trace with this provider (tests pass one with an in-memory exporter); None: off, or
    with ``propagate`` only the client's trace context carried through."""
    global _tracer, _propagate
    _tracer = None if provider is None else provider.get_tracer("actiongate")
    _propagate = provider is not None or propagate


def enabled() -> bool:
    """Whether tracing is on (spans recorded, or at least the trace context carried)."""
    return _propagate


_NO_SPAN: AbstractContextManager[None] = nullcontext()
"""What the span helpers give when nothing is recorded or carried: reused, no generator made."""


def request_span(
    name: str, headers: Mapping[str, str], attributes: Mapping[str, Any]
) -> AbstractContextManager[Span | None]:
    """The server span of one client request, continuing the client's ``traceparent``."""
    if _tracer is None and not (_propagate and "traceparent" in headers):
        return _NO_SPAN
    return _request_span(name, headers, attributes)


@contextmanager
def _request_span(
    name: str, headers: Mapping[str, str], attributes: Mapping[str, Any]
) -> Iterator[Span | None]:
    if _tracer is None:
        token = otel_context.attach(_PROPAGATOR.extract(headers))  # carried, not recorded
        try:
            yield None
        finally:
            otel_context.detach(token)
        return
    parent = _PROPAGATOR.extract(headers) if "traceparent" in headers else None
    with _tracer.start_as_current_span(
        name, context=parent, kind=SpanKind.SERVER, attributes=dict(attributes)
    ) as span:
        yield span


def request_done(
    span: Span | None, status: int, agent: str | None, conversation_id: str | None
) -> None:
    """Close out a request span: status, agent (the requested model) and conversation id."""
    if span is None:
        return
    span.set_attribute("http.response.status_code", status)
    if agent is not None:
        span.set_attribute("gen_ai.request.model", agent)
        span.set_attribute("actiongate.agent", agent)
    if conversation_id is not None:
        span.set_attribute("actiongate.conversation.id", conversation_id)
    if status >= 500:
        failed(span, str(status))


def start_upstream(model: str, provider: str) -> Span | None:
    """``chat {model}``: one call to the LLM API, a child of the current span.

    Not made current: a streamed call is read across tasks, and a context attached in one
    cannot be detached in another. End it with :func:`end_upstream`.
    """
    if _tracer is None:
        return None
    attributes = {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": model,
        "gen_ai.provider.name": provider,
    }
    return _tracer.start_span(f"chat {model}", kind=SpanKind.CLIENT, attributes=attributes)


def end_upstream(span: Span | None, status: int, usage: tuple[int, int] | None) -> None:
    """End an upstream span with its status and the tokens it reported."""
    if span is None or not span.is_recording():
        return
    span.set_attribute("http.response.status_code", status)
    if usage is not None:
        span.set_attribute("gen_ai.usage.input_tokens", usage[0])
        span.set_attribute("gen_ai.usage.output_tokens", usage[1])
    if status != 200:
        failed(span, "client_closed" if status == 499 else str(status))
    span.end()


def action_span(tool: str, call_id: str | None) -> AbstractContextManager[Span | None]:
    """``execute_tool {tool}``: one action call."""
    return _NO_SPAN if _tracer is None else _action_span(_tracer, tool, call_id)


@contextmanager
def _action_span(tracer: Tracer, tool: str, call_id: str | None) -> Iterator[Span | None]:
    attributes = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": tool}
    if call_id:
        attributes["gen_ai.tool.call.id"] = call_id
    with tracer.start_as_current_span(
        f"execute_tool {tool}", kind=SpanKind.INTERNAL, attributes=attributes
    ) as span:
        yield span


def action_done(span: Span | None, outcome: str, response: Mapping[str, Any] | None) -> None:
    """Close out an action span: its outcome and the API's status code."""
    if span is None:
        return
    span.set_attribute("actiongate.outcome", outcome)
    if response is not None:
        span.set_attribute("http.response.status_code", int(response["status_code"]))
    if outcome != "success":
        failed(span, outcome)


def failed(span: Span | None, kind: str) -> None:
    """Mark a span as failed with an ``error.type`` (a fixed word, never a message)."""
    if span is not None:
        span.set_attribute("error.type", kind)
        span.set_status(Status(StatusCode.ERROR))


def inject(headers: MutableMapping[str, str]) -> None:
    """Add the current span's ``traceparent`` (and ``tracestate``) to outgoing headers."""
    if _propagate and trace.get_current_span().get_span_context().is_valid:
        _PROPAGATOR.inject(headers)
