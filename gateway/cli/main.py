"""The ``actiongate`` command line (README, "Command line").

Thin: parse arguments, call the library, print, choose an exit code.

Exit status: 0 success, 1 user error (one line on stderr), 2 bad usage (argparse), 130 when
interrupted (Ctrl-C) before a server took over the signal.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from gateway.definitions.config import DEFAULT_DATABASE, Config, load_config
from gateway.errors import ActionGateError, ConfigError
from gateway.extras import require_extra
from gateway.stores.logs import OUTCOMES

__all__ = ["main"]

Handler = Callable[[argparse.Namespace], int]


def _print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def _warn(message: str) -> None:
    sys.stderr.write(f"warning: {message}\n")


def cmd_validate(ns: argparse.Namespace) -> int:
    """Check a file as a save would (secrets, egress policy included); warn about the rest."""
    from gateway.definitions.validation import validate_actions
    from gateway.net.egress import EgressPolicy

    def save_time_checks(config: Config) -> None:
        egress = config.egress
        policy = EgressPolicy(egress.allow, ports=egress.ports, enabled=egress.enabled)
        # No database here: only the file's secrets: count as defined.
        validate_actions(
            config.actions, secrets=set(config.secrets), destinations=policy.save_time_refusal
        )

    config = load_config(ns.file, check=save_time_checks)
    for name in config.unset_env:
        _warn(f"environment variable ${{{name}}} is not set")
    for action in config.actions:
        if not action.when_not_to_use.strip():
            _warn(f"action {action.name!r} has no when_not_to_use (when not to call it)")
    n, a = len(config.actions), len(config.agents)
    print(f"OK: {n} action{'s' * (n != 1)}, {a} agent{'s' * (a != 1)}")
    return 0


def cmd_export(ns: argparse.Namespace) -> int:
    from adapters import export_tools
    from gateway.definitions.tools import to_tool_definitions

    config = load_config(ns.file)
    actions = config.agent_actions(ns.agent)
    try:
        tools = export_tools(to_tool_definitions(actions), ns.format)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    _print_json(tools)
    return 0


def _pairs(items: Sequence[str] | None, flag: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{flag} {item!r}: expected NAME=VALUE")
        out[key] = value
    return out


def _typed_args(action: Any, raw: dict[str, str]) -> dict[str, Any]:
    """Convert ``--arg k=v`` strings to the declared parameter types."""
    params = getattr(action, "parameters", {})
    out: dict[str, Any] = {}
    for key, text in raw.items():
        kind = params[key].type if key in params else "string"
        try:
            if kind == "integer":
                out[key] = int(text)
            elif kind == "number":
                out[key] = float(text)
            elif kind == "boolean":
                out[key] = {"true": True, "false": False}[text.lower()]
            elif kind in {"array", "object"}:
                out[key] = json.loads(text)
            else:
                out[key] = text
        except (ValueError, KeyError) as e:
            raise ConfigError(f"--arg {key}: expected a {kind}, got {text!r}") from e
    return out


def cmd_test(ns: argparse.Namespace) -> int:
    import asyncio

    from gateway.admin.testrun import run_test

    config = load_config(ns.file)
    variables = _pairs(ns.var, "--var")
    raw_args = _pairs(ns.arg, "--arg")
    action = next((a for a in config.actions if a.tool_name == ns.tool_name), None)
    if action is None:
        known = ", ".join(a.tool_name for a in config.actions) or "none"
        raise ConfigError(f"unknown action {ns.tool_name!r} (actions: {known})")
    result = asyncio.run(
        run_test(
            config,
            action,
            variables,
            _typed_args(action, raw_args),
            dry_run=ns.dry_run,
            database=ns.db,
            warn=_warn,
        )
    )
    if ns.json:
        _print_json(result.as_json())
    else:
        sys.stdout.write(result.as_text())
    return 0 if result.passed else 1


def cmd_logs(ns: argparse.Namespace) -> int:
    import asyncio

    from gateway.cli.logview import show_logs

    database = ns.db
    if database is None and ns.config:
        database = load_config(ns.config).database
    filters = {
        "action": ns.action,
        "agent": ns.agent,
        "conversation_id": ns.conversation,
        "outcome": ns.outcome,
    }
    try:
        asyncio.run(show_logs(database, filters, limit=ns.limit, as_json=ns.json, follow=ns.follow))
    except KeyboardInterrupt:
        return 0
    return 0


def cmd_serve(ns: argparse.Namespace) -> int:
    """Check, bind, then serve: every failure before serving is one line and exit 1."""
    from gateway.cli.serving import check_database, listen, url_of
    from gateway.net.browser import is_loopback_bind

    config = load_config(ns.config)
    if config.unset_env:
        names = ", ".join(f"${{{n}}}" for n in config.unset_env)
        raise ConfigError(f"not starting: environment variables not set: {names}")
    if ns.workers < 1:
        raise ConfigError("--workers must be at least 1")
    if ns.workers > 1 and ns.record:
        raise ConfigError("--record writes one cassette per conversation: use it with one worker")
    if ns.worker_fd is not None:  # a worker of serve --workers: the parent bound and checked
        return _serve_app(ns, config, socket.socket(fileno=ns.worker_fd))
    # Bound before the app starts: its lifespan stores a first admin token, shown only once.
    with contextlib.closing(listen(ns.host, ns.port)) as sock:
        check_database(ns.db or config.database)
        if not config.allowed_hosts and not is_loopback_bind(ns.host):
            _warn(
                f"bound to {ns.host} with no allowed_hosts: any Host header is answered, so a web "
                "page can reach this gateway by DNS rebinding; set allowed_hosts"
            )
        if ns.workers == 1:
            if ns.metrics_port is not None:
                _serve_metrics(ns.host, ns.metrics_port)
            return _serve_app(ns, config, sock)
        from gateway.cli.workers import ensure_metrics_dir, run_workers

        ensure_metrics_dir()  # before the metrics port's collector reads it
        if ns.metrics_port is not None:
            _serve_metrics(ns.host, ns.metrics_port)
        url = url_of(sock)
        args = ["serve", "--config", ns.config, "--host", ns.host, "--port", str(ns.port)]
        args += ["--log-level", ns.log_level, "--log-format", ns.log_format]
        args += ["--db", ns.db] if ns.db else []
        return run_workers(args, sock, ns.workers, ready_line=_ready_line(url))


def _ready_line(url: str) -> str:
    return f"actiongate: listening on {url} (OpenAI base URL {url}/v1, dashboard {url}/)"


def _serve_app(ns: argparse.Namespace, config: Config, sock: socket.socket) -> int:
    """Build the app and serve it on ``sock`` (one process)."""
    from gateway.app import create_app
    from gateway.cli.serving import run_server, url_of
    from gateway.telemetry import logs, tracing

    logs.configure(ns.log_format, ns.log_level)
    tracing.configure()  # OTEL_TRACES_EXPORTER and friends; off when unset
    with contextlib.closing(sock):
        app = create_app(config, database=ns.db, bind_host=ns.host)
        served: Any = app
        if ns.record:
            from gateway.replay.recording import Recorder

            served = Recorder(ns.record).wrap(app)
        line = _ready_line(url_of(sock))
        return run_server(
            served, sock, log_level=ns.log_level, ready_line=line, log_format=ns.log_format
        )


def _serve_metrics(host: str, port: int) -> None:
    """``--metrics-port``: ``/metrics`` without a token on a port of its own (a thread)."""
    from prometheus_client import start_http_server

    from gateway.cli.serving import listen_error
    from gateway.telemetry import metrics

    try:
        start_http_server(port, addr=host, registry=metrics.registry())
    except OSError as e:
        raise listen_error(host, port, e, what="metrics", flag="--metrics-port") from None


def cmd_mcp(ns: argparse.Namespace) -> int:
    import asyncio

    require_extra("mcp", "mcp", "actiongate mcp")
    from gateway.mcp.server import serve_stdio

    config = load_config(ns.file)
    for name in config.unset_env:
        _warn(f"environment variable ${{{name}}} is not set")  # stderr: stdout carries MCP
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_stdio(config, ns.agent, database=ns.db))
    return 0


def cmd_import_openapi(ns: argparse.Namespace) -> int:
    from gateway.importers.openapi import Selection, import_openapi

    operations = list(ns.operation or ())
    if ns.operations_file:
        try:
            lines = Path(ns.operations_file).read_text(encoding="utf-8").splitlines()
        except OSError as e:
            raise ConfigError(f"{ns.operations_file}: cannot read file: {e.strerror}") from None
        operations += [x.strip() for x in lines if x.strip() and not x.lstrip().startswith("#")]
    pins = {}
    for item in ns.set or ():
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ConfigError(f"--set {item!r}: expected NAME=VALUE")
        pins[name] = value
    selection = Selection(operations, tuple(ns.tag or ()), tuple(ns.path_prefix or ()))
    result = import_openapi(
        ns.spec,
        base_url=ns.base_url,
        selection=selection,
        pins=pins,
        refresh_tokens=ns.refresh_token,
    )
    summary = result.summary()
    if ns.list:
        sys.stdout.write(result.listing())
        sys.stderr.write(summary + "\n")
        return 0
    if (warning := result.size_warning()) is not None:
        sys.stderr.write(warning + "\n")
    if not result.config["actions"]:
        # Nothing an operator could enable: not a success, and no empty file to save.
        sys.stderr.write(f"error: {summary}\n")
        return 1
    sys.stdout.write(result.to_yaml())
    sys.stderr.write(summary + "\n")
    return 0


def cmd_replay(ns: argparse.Namespace) -> int:
    from gateway.replay.run import run_replay_command

    return run_replay_command(ns.cassette, config=ns.config, as_json=ns.json)


def cmd_demo(ns: argparse.Namespace) -> int:
    from gateway.cli.demo import DemoPorts, run_demo

    ports = DemoPorts(gateway=ns.port, upstream=ns.upstream_port, api=ns.api_port)
    return run_demo(ports=ports, check=ns.check)


def _add_import_openapi(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", metavar="SPEC", help="a file or an http(s) URL, JSON or YAML")
    p.add_argument("--base-url", metavar="URL", help="API base URL (default: the spec's servers)")
    p.add_argument(
        "--operation",
        action="append",
        metavar="NAME",
        help="only this operation: operationId, 'METHOD /path', tool name, or a glob on them",
    )
    p.add_argument("--operations-file", metavar="FILE", help="operation names, one per line")
    p.add_argument("--tag", action="append", metavar="TAG", help="only operations with this tag")
    p.add_argument("--path-prefix", action="append", metavar="PATH", help="only paths under it")
    p.add_argument(
        "--set",
        action="append",
        metavar="NAME=VALUE",
        help="send this path/query/header parameter with this value (a literal or a template)",
    )
    p.add_argument(
        "--refresh-token",
        action="store_true",
        help="OAuth2 authorization-code schemes: refresh access tokens from a stored refresh token",
    )
    p.add_argument(
        "--list", action="store_true", help="list every operation and whether it would import"
    )
    p.set_defaults(handler=cmd_import_openapi)


def cmd_eval(ns: argparse.Namespace) -> int:
    from gateway.evaluation.command import run_eval_command

    return run_eval_command(ns)


def _add_eval(p: argparse.ArgumentParser) -> None:
    p.add_argument("suite", metavar="SUITE", help="the suite (YAML): cases and expectations")
    p.add_argument("--config", required=True, metavar="FILE")
    p.add_argument("--agent", metavar="ID", help="the agent (default: the suite's or the only)")
    p.add_argument("--runs", type=int, metavar="N", help="send each case N times (default: suite)")
    p.add_argument("--json", action="store_true", help="one JSON object instead of tables")
    p.add_argument("--compare", metavar="FILE2", help="also run on this config; side by side")
    p.add_argument(
        "--guardrail",
        action="append",
        metavar="TOOL=TEXT",
        help="compare with this when_not_to_use for TOOL (on --compare's config, or this one)",
    )
    p.add_argument(
        "--description", action="append", metavar="TOOL=TEXT", help="the same for a description"
    )
    answers = p.add_mutually_exclusive_group()
    answers.add_argument("--cassette", metavar="FILE", help="answer from recorded answers")
    answers.add_argument("--record", metavar="FILE", help="append the upstream's answers here")
    p.set_defaults(handler=cmd_eval)


def _add_serve(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, metavar="FILE")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--db", metavar="URL", help="database URL (default: the config's)")
    p.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    p.add_argument(
        "--log-format", default="text", choices=["text", "json"], help="json: one object per line"
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="also serve /metrics without a token on this port (keep it off the internet)",
    )
    p.add_argument("--record", metavar="DIR", help="write one cassette per conversation into DIR")
    p.add_argument(
        "--workers", type=int, default=1, metavar="N", help="worker processes on the one port"
    )
    p.add_argument("--worker-fd", type=int, help=argparse.SUPPRESS)  # set by --workers
    p.set_defaults(handler=cmd_serve)


def build_parser() -> argparse.ArgumentParser:
    """The ``actiongate`` argument parser."""
    from adapters import FORMATS
    from gateway.replay.arguments import add_replay_arguments

    parser = argparse.ArgumentParser(
        prog="actiongate", description="Custom Actions gateway for OpenAI-compatible agents."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("validate", help="check a config or actions file")
    p.add_argument("file", metavar="FILE")
    p.set_defaults(handler=cmd_validate)

    p = sub.add_parser("export", help="print tool schemas for an LLM API")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--format", required=True, choices=sorted(FORMATS))
    p.add_argument("--agent", metavar="ID", help="only this agent's enabled actions")
    p.set_defaults(handler=cmd_export)

    p = sub.add_parser("test", help="run one action once and show what the model would get")
    p.add_argument("file", metavar="FILE")
    p.add_argument("tool_name", metavar="TOOL_NAME")
    p.add_argument("--var", action="append", metavar="NAME=VALUE", help="e.g. lead.email=a@b.c")
    p.add_argument("--arg", action="append", metavar="NAME=VALUE", help="a model argument")
    p.add_argument("--dry-run", action="store_true", help="render the request, do not send it")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--db", metavar="URL", help="log database (default: the config's)")
    p.set_defaults(handler=cmd_test)

    p = sub.add_parser("logs", help="show execution logs, newest first")
    p.add_argument("--config", metavar="FILE", help="read the database URL from this config")
    p.add_argument("--db", metavar="URL", help=f"database URL (default {DEFAULT_DATABASE})")
    p.add_argument("--action", metavar="TOOL_NAME")
    p.add_argument("--agent", metavar="ID")
    p.add_argument("--conversation", metavar="ID")
    p.add_argument("--outcome", choices=OUTCOMES)
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true", help="one JSON record per line")
    p.add_argument("--follow", action="store_true", help="keep printing new records")
    p.set_defaults(handler=cmd_logs)

    _add_serve(sub.add_parser("serve", help="run the proxy (and admin API) on one port"))

    p = sub.add_parser("mcp", help="serve an agent's http actions to an MCP client over stdio")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--agent", required=True, metavar="ID")
    p.add_argument("--db", metavar="URL", help="log database (default: the config's)")
    p.set_defaults(handler=cmd_mcp)

    _add_import_openapi(
        sub.add_parser("import-openapi", help="print actions for an OpenAPI 3 spec's operations")
    )

    p = sub.add_parser("replay", help="replay recorded conversations; report every difference")
    add_replay_arguments(p)
    p.set_defaults(handler=cmd_replay)

    _add_eval(sub.add_parser("eval", help="measure whether the model calls or skips each action"))

    p = sub.add_parser("demo", help="offline demo: gateway + scripted model + sample API")
    p.add_argument("--port", type=int, default=8080, help="gateway port (default 8080)")
    p.add_argument(
        "--upstream-port", type=int, default=8091, help="scripted model port (default 8091)"
    )
    p.add_argument("--api-port", type=int, default=8092, help="sample API port (default 8092)")
    p.add_argument("--check", action="store_true", help="run the scripted tour, then exit")
    p.set_defaults(handler=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    ns = parser.parse_args(argv)
    handler: Handler = ns.handler
    try:
        return handler(ns)
    except ActionGateError as e:
        sys.stderr.write(f"error: {e}\n")
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
