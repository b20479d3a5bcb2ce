"""OpenTelemetry spans with the SDK's in-memory exporter, in process over the ASGI app.

A request span per client request continuing the client's ``traceparent``, ``chat {model}`` per
upstream call and ``execute_tool {tool}`` per action call as its children, the GenAI attributes,
``traceparent`` sent to an action's API only where the action asks, and no secret or message
text in any span.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gateway.definitions.actions import HttpAction
from gateway.errors import ConfigError
from gateway.telemetry import tracing
from tests.support.fresh_process import run_script
from tests.support.gateway import CRM_SECRET, UPSTREAM_KEY, Gateway, running_gateway

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"
SECRET_WORDS = "my card number is 4111"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    try:
        yield exporter
    finally:
        tracing.install(None)


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Gateway]:
    async with running_gateway(tmp_path) as gateway:
        yield gateway


def by_name(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    return {span.name: span for span in exporter.get_finished_spans()}


def call(name: str, arguments: dict[str, Any], id: str) -> dict[str, Any]:
    return {"tool_calls": [{"name": name, "arguments": arguments, "id": id}]}


def everything(exporter: InMemorySpanExporter) -> str:
    """Every span's name, attributes, events and status, as one text."""
    return json.dumps(
        [
            {
                "name": s.name,
                "attributes": dict(s.attributes or {}),
                "events": [(e.name, dict(e.attributes or {})) for e in s.events],
                "status": str(s.status.description),
                "resource": dict(s.resource.attributes),
            }
            for s in exporter.get_finished_spans()
        ],
        default=str,
    )


async def test_a_tool_turn_is_one_trace_continuing_the_clients(
    gw: Gateway, spans: InMemorySpanExporter
) -> None:
    gw.upstream.script(
        [call("look_up_order", {"order_number": "A-12345"}, "call_1"), {"content": "Shipped."}]
    )
    response = await gw.chat(
        messages=[{"role": "user", "content": f"Where is order A-12345? {SECRET_WORDS}"}],
        conversation={"id": "conv-t", "lead": {"email": "ann@example.com"}},
    )
    assert response.status_code == 200
    named = by_name(spans)
    request = named["POST /v1/chat/completions"]
    tool = named["execute_tool look_up_order"]
    rounds = [s for s in spans.get_finished_spans() if s.name == "chat m1"]
    assert len(rounds) == 2
    assert request.parent is None  # no traceparent sent: a new trace
    for child in [tool, *rounds]:
        assert child.parent is not None and child.parent.span_id == request.context.span_id
        assert child.context.trace_id == request.context.trace_id
    attributes = dict(tool.attributes or {})
    assert attributes["gen_ai.operation.name"] == "execute_tool"
    assert attributes["gen_ai.tool.name"] == "look_up_order"
    assert attributes["gen_ai.tool.call.id"] == "call_1"
    assert attributes["http.response.status_code"] == 200
    assert attributes["actiongate.outcome"] == "success"
    first = dict(rounds[0].attributes or {})
    assert first["gen_ai.operation.name"] == "chat" and first["gen_ai.request.model"] == "m1"
    assert first["gen_ai.usage.input_tokens"] > 0 and first["gen_ai.usage.output_tokens"] > 0
    assert first["http.response.status_code"] == 200
    top = dict(request.attributes or {})
    assert top["http.response.status_code"] == 200 and top["actiongate.agent"] == "support"
    assert top["actiongate.conversation.id"] == "conv-t"


async def test_the_clients_traceparent_is_continued(
    gw: Gateway, spans: InMemorySpanExporter
) -> None:
    gw.upstream.script([{"content": "Hi."}])
    response = await gw.client.post(
        "/v1/chat/completions",
        json={"model": "support", "messages": [{"role": "user", "content": "Hi"}]},
        headers={"traceparent": TRACEPARENT},
    )
    assert response.status_code == 200
    request = by_name(spans)["POST /v1/chat/completions"]
    assert request.context.trace_id == int(CLIENT_TRACE, 16)
    assert request.parent is not None and request.parent.span_id == int(CLIENT_SPAN, 16)
    assert by_name(spans)["chat m1"].context.trace_id == int(CLIENT_TRACE, 16)


async def test_traceparent_reaches_an_api_only_where_the_action_asks(
    gw: Gateway, spans: InMemorySpanExporter
) -> None:
    workspace = gw.services.workspace
    traced = HttpAction(
        name="Traced lookup", url=f"{gw.api.base_url}/echo/traced", propagate_trace=True
    )
    workspace.replace(actions=[*workspace.actions.values(), traced])
    gw.upstream.script(
        [
            {
                "tool_calls": [
                    {"name": "look_up_order", "arguments": {"order_number": "A-1"}, "id": "a"},
                    {"name": "traced_lookup", "arguments": {}, "id": "b"},
                ]
            },
            {"content": "Ok."},
        ]
    )
    await gw.chat(messages=[{"role": "user", "content": "A-1?"}])
    received = {r.path.rsplit("/", 1)[-1]: r for r in gw.api.received}
    assert "traceparent" not in {k.lower() for k in received["A-1"].headers}
    sent = {k.lower(): v for k, v in received["traced"].headers.items()}["traceparent"]
    span = by_name(spans)["execute_tool traced_lookup"]
    assert sent.startswith(f"00-{span.context.trace_id:032x}-{span.context.span_id:016x}-")


async def test_streams_and_failures_end_their_spans(
    gw: Gateway, spans: InMemorySpanExporter
) -> None:
    gw.upstream.script([{"content": "one two three"}])
    async with gw.client.stream(
        "POST",
        "/v1/chat/completions",
        json={"model": "support", "stream": True, "messages": [{"role": "user", "content": "x"}]},
    ) as streamed:
        assert streamed.status_code == 200
        await streamed.aread()
    gw.upstream.script([{"error": {"status": 500, "message": "boom"}}])
    failed = await gw.chat(messages=[{"role": "user", "content": "x"}])
    assert failed.status_code == 502
    finished = spans.get_finished_spans()
    requests = [s for s in finished if s.name == "POST /v1/chat/completions"]
    assert [dict(s.attributes or {})["http.response.status_code"] for s in requests] == [200, 502]
    upstream = [s for s in finished if s.name == "chat m1"]
    assert [dict(s.attributes or {})["http.response.status_code"] for s in upstream] == [200, 502]
    assert dict(upstream[1].attributes or {})["error.type"] == "502"


async def test_no_secret_or_message_text_in_any_span(
    gw: Gateway, spans: InMemorySpanExporter
) -> None:
    gw.upstream.script([call("get_customer_account", {}, "c1"), {"content": "You are on Pro."}])
    await gw.chat(
        messages=[{"role": "user", "content": f"Which plan am I on? {SECRET_WORDS}"}],
        conversation={"lead": {"email": "ann@example.com"}},
    )
    text = everything(spans)
    assert "execute_tool get_customer_account" in text  # the spans are there
    for leak in (CRM_SECRET, UPSTREAM_KEY, SECRET_WORDS, "You are on Pro", "ann@example.com"):
        assert leak not in text


def test_configure_reads_the_standard_variables() -> None:
    try:
        assert tracing.configure({}) is False and not tracing.enabled()
        assert tracing.configure({"OTEL_TRACES_EXPORTER": "none"}) is True and tracing.enabled()
        off = {"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "true"}
        assert tracing.configure(off) is False
        with pytest.raises(ConfigError, match="OTEL_TRACES_EXPORTER='zipkin' is not supported"):
            tracing.configure({"OTEL_TRACES_EXPORTER": "zipkin"})
    finally:
        tracing.install(None)


async def test_exporter_none_records_nothing_yet_carries_the_clients_trace(gw: Gateway) -> None:
    tracing.configure({"OTEL_TRACES_EXPORTER": "none"})
    try:
        workspace = gw.services.workspace
        traced = HttpAction(
            name="Traced lookup", url=f"{gw.api.base_url}/echo/traced", propagate_trace=True
        )
        workspace.replace(actions=[*workspace.actions.values(), traced])
        gw.upstream.script([call("traced_lookup", {}, "t1"), {"content": "Ok."}])
        response = await gw.client.post(
            "/v1/chat/completions",
            json={"model": "support", "messages": [{"role": "user", "content": "x"}]},
            headers={"traceparent": TRACEPARENT},
        )
        assert response.status_code == 200
        gw.upstream.script([call("traced_lookup", {}, "t2"), {"content": "Ok."}])
        await gw.chat(messages=[{"role": "user", "content": "no trace given"}])
    finally:
        tracing.install(None)
    first, second = gw.api.received
    assert {k.lower(): v for k, v in first.headers.items()}["traceparent"] == TRACEPARENT
    assert "traceparent" not in {k.lower() for k in second.headers}  # nothing to carry


GLOBAL_PROVIDERS = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from tests.support.gateway import running_gateway

    exporter, reader = InMemorySpanExporter(), InMemoryMetricReader()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))

    async def main():
        async with running_gateway(Path(sys.argv[1])) as gw:
            gw.upstream.script([{"content": "Hello."}])
            response = await gw.chat(messages=[{"role": "user", "content": "hi"}])
            assert response.status_code == 200, response.text
            assert (await gw.client.get("/healthz")).status_code == 200
        data = reader.get_metrics_data()
        names = [m.name for rm in (data.resource_metrics if data else ())
                 for sm in rm.scope_metrics for m in sm.metrics]
        print([s.name for s in exporter.get_finished_spans()], names)

    asyncio.run(main())
    """
)


def test_a_process_wide_provider_gets_no_second_server_span_or_metric(tmp_path: Path) -> None:
    # Global OpenTelemetry providers, as opentelemetry-instrument would set them: the gateway's
    # requests still make their spans and metrics only through its own telemetry (the
    # framework's own instrumentation would add a server span and histogram per request).
    # A fresh process: the global providers can be set once per process.
    out = run_script(GLOBAL_PROVIDERS, str(tmp_path))
    assert out.strip() == "[] []"
