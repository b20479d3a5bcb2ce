"""Command line (SPEC §8). Thin: parse arguments, call the library, print, choose an exit code.

Exit status: 0 success, 1 user error (one line on stderr), 2 bad usage (argparse).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from gateway.config import Config, load_config
from gateway.errors import ActionGateError, ConfigError
from gateway.rendering import body_variables, required_variables
from gateway.templating import analyze

__all__ = ["main"]

Handler = Callable[[argparse.Namespace], int]


def _print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def _warn(message: str) -> None:
    sys.stderr.write(f"warning: {message}\n")


def _secret_references(config: Config) -> set[str]:
    from gateway.actions import ButtonAction, FormAction, HttpAction, HttpClick, HttpRequest

    found: set[str] = set()
    requests: list[HttpRequest] = []
    for action in config.actions:
        if isinstance(action, HttpAction):
            requests.append(action)
        elif isinstance(action, FormAction) and action.submit:
            requests.append(action.submit)
        elif isinstance(action, ButtonAction) and isinstance(action.on_click, HttpClick):
            requests.append(action.on_click.http)
    for req in requests:
        names = required_variables(req) | body_variables(req.body)
        names |= {v for q in req.query.values() for v in analyze(q).variables}
        found |= {n.split(".", 1)[1] for n in names if n.startswith("secrets.")}
    return found


def cmd_validate(ns: argparse.Namespace) -> int:
    config = load_config(ns.file)
    for name in config.unset_env:
        _warn(f"environment variable ${{{name}}} is not set")
    for name in sorted(_secret_references(config) - set(config.secrets)):
        _warn(f"secret {name!r} is referenced but not defined in secrets:")
    n, a = len(config.actions), len(config.agents)
    print(f"OK: {n} action{'s' * (n != 1)}, {a} agent{'s' * (a != 1)}")
    return 0


def cmd_export(ns: argparse.Namespace) -> int:
    from adapters import export_tools
    from gateway.tools import to_tool_definitions

    config = load_config(ns.file)
    actions = config.agent_actions(ns.agent)
    try:
        tools = export_tools(to_tool_definitions(actions), ns.format)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    _print_json(tools)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``actiongate`` argument parser."""
    from adapters import FORMATS

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

    for extra in _EXTRA_COMMANDS:
        extra(sub)
    return parser


_EXTRA_COMMANDS: list[Callable[[Any], None]] = []


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
