"""What an import produced, and how ``import-openapi`` prints it: the YAML, the summary line,
``--list`` and the size warning."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from gateway.importers.openapi_schema import clean_text

__all__ = ["CONTEXT_BUDGET_CHARS", "MAX_PROVIDER_TOOLS", "ImportResult"]

MAX_PROVIDER_TOOLS = 128
"""OpenAI's limit on tools in one request (the strictest of the common ones)."""
CONTEXT_BUDGET_CHARS = 60_000
"""Tool definitions past this are a noticeable share of a model's context on every call."""
_TODO = "  # TODO: when must the model NOT use this action? (shown to the model)"


@dataclass
class ImportResult:
    """What :func:`import_openapi` produced."""

    config: dict[str, Any]
    """``{"secrets": {NAME: "${NAME}"}, "actions": [...]}``, ready to dump as YAML."""
    skipped: list[tuple[str, str]] = field(default_factory=list)
    """``(operationId or "METHOD path", reason)`` for each operation not imported."""
    notes: list[tuple[str, str]] = field(default_factory=list)
    """``(operation, what was left out of its action and why)``."""
    source: str = ""
    seen: list[tuple[str, str, str, list[str]]] = field(default_factory=list)
    """``(operation, METHOD, path, tags)`` of every operation considered, in spec order."""
    tools: dict[str, str] = field(default_factory=dict)
    """The tool name each imported operation got."""
    webhooks: int = 0
    """Webhooks the spec declares (incoming calls: nothing to import)."""
    code_flows: dict[str, str] = field(default_factory=dict)
    """OAuth2 authorization-code schemes the actions use: secret name -> token URL."""
    refresh_tokens: bool = False
    """Imported with ``--refresh-token``: those schemes use the refresh-token grant."""

    def listing(self) -> str:
        """``import-openapi --list``: one line per operation and what importing it would do."""
        why = dict(self.skipped)
        lines = []
        for label, method, path, tags in self.seen:
            fate = f"imports as {self.tools[label]}" if label in self.tools else "skipped: "
            fate += "" if label in self.tools else why.get(label, "?")
            tag = f" [{', '.join(tags)}]" if tags else ""
            lines.append(f"{method} {path}  {label}{tag}  {fate}")
        return "\n".join(lines) + ("\n" if lines else "")

    def size_warning(self) -> str | None:
        """A warning when the tools are more than a provider accepts, or a large context."""
        actions = self.config.get("actions", [])
        size = len(json.dumps(actions))
        if len(actions) > MAX_PROVIDER_TOOLS:
            return (
                f"warning: {len(actions)} tools, more than OpenAI accepts in one request "
                f"({MAX_PROVIDER_TOOLS}); select with --tag, --path-prefix or --operation "
                f"(definitions: {size:,} characters)"
            )
        if size > CONTEXT_BUDGET_CHARS:
            return (
                f"warning: the {len(actions)} tool definitions are {size:,} characters, about "
                f"{size // 4:,} tokens of every request's context; consider selecting fewer"
            )
        return None

    def summary(self) -> str:
        """One line: operations seen, imported, and skipped by reason (``import-openapi``)."""
        reasons: dict[str, int] = {}
        for _, why in self.skipped:
            key = re.sub(r"'[^']*'", "'…'", why.split(";", 1)[0])[:80]
            reasons[key] = reasons.get(key, 0) + 1
        imported = len(self.config.get("actions", []))
        seen = imported + len(self.skipped)
        line = (
            f"import-openapi: {seen} operations, {imported} imported, {len(self.skipped)} skipped"
        )
        if reasons:
            top = sorted(reasons.items(), key=lambda kv: -kv[1])[:5]
            line += " (" + "; ".join(f"{n}: {why}" for why, n in top) + ")"
        if self.webhooks:
            line += f"; {self.webhooks} webhooks (calls to you: not imported)"
        return line

    def _code_flow_lines(self) -> list[str]:
        """How the actions of an authorization-code scheme get their tokens, and the choice."""
        lines: list[str] = []
        for name, url in self.code_flows.items():
            where = clean_text(url.split("?", 1)[0])
            if self.refresh_tokens:
                lines += [
                    "#",
                    f"# OAuth2 authorization code ({name}): authorize the app once, then set",
                    f"#   {name}_REFRESH_TOKEN. The gateway runs the refresh_token grant at",
                    f"#   {where}; a refresh token the server rotates is stored",
                    "#   encrypted in the secret store under the same name (and wins from then",
                    "#   on).",
                ]
            else:
                lines += [
                    "#",
                    f"# OAuth2 authorization code ({name}): {name} is an access token you obtain",
                    "#   and renew. Or import with --refresh-token: the gateway then refreshes it",
                    f"#   at {where} from {name}_REFRESH_TOKEN",
                    "#   and stores rotated refresh tokens encrypted in the secret store.",
                ]
        return lines

    def to_yaml(self) -> str:
        """The text ``actiongate import-openapi`` prints: comments, ``secrets:``, ``actions:``."""
        secrets = list(self.config.get("secrets", {}))
        where = clean_text(self.source.split("?", 1)[0])  # a URL's query may hold a token
        lines = [f"# Actions imported from {where} by actiongate import-openapi."]
        lines.append("# Review them, then fill in when_not_to_use (left empty on purpose).")
        if secrets:
            lines.append("# Set these environment variables: " + ", ".join(secrets))
        lines += self._code_flow_lines()
        for title, items in (
            ("Skipped operations (not imported)", self.skipped),
            ("Left out of imported actions", self.notes),
        ):
            if items:
                lines += ["#", f"# {title}:"]
                lines += [f"#   {clean_text(op)}: {clean_text(why)}" for op, why in items]
        text = yaml.safe_dump(self.config, sort_keys=False, allow_unicode=True, width=100)
        text = re.sub(
            r"^( *)when_not_to_use: ''$", rf"\1when_not_to_use: ''{_TODO}", text, flags=re.M
        )
        return "\n".join(lines) + "\n" + text
