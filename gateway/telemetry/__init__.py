"""What operators watch: Prometheus metrics (:mod:`.metrics`), OpenTelemetry traces
(:mod:`.tracing`) and structured logs with request ids (:mod:`.logs`).

A low layer on purpose: the proxy, the engine and the stores record here where things happen,
and nothing here imports them back.
"""
