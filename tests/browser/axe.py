"""axe-core in the browser tests: inject it into a page, fail on serious or critical violations.

axe-core is the npm package pinned in ``tests/browser/package.json`` (``npm ci`` there, which
``python3 scripts/dev.py test`` does). Its source is evaluated through Playwright rather than
added as a ``<script>``: the dashboard's CSP (``script-src 'self'``) would block an injected
script tag, and evaluation through the DevTools protocol is not subject to the page's CSP, so
the page is checked with its real policy in force (no ``bypass_csp`` needed).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from playwright.sync_api import Page

AXE_JS = Path(__file__).resolve().parent / "node_modules" / "axe-core" / "axe.min.js"
FAILING_IMPACTS = frozenset({"serious", "critical"})
"""Violations of these impacts fail a page; "minor" and "moderate" are reported only."""

# Every WCAG 2.x A and AA rule axe has, plus its best practices (landmarks, one main, ...).
_RUN = """async () => await axe.run(document, {
  runOnly: {type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa",
                                   "best-practice"]},
  resultTypes: ["violations"],
})"""


def axe_missing() -> str | None:
    """Why axe-core cannot run here, or None."""
    if not AXE_JS.exists():
        return f"{AXE_JS} is missing (npm ci --prefix tests/browser, or scripts/dev.py test)"
    return None


def _describe(violations: list[dict[str, Any]]) -> str:
    """The failing rules: id, impact, help text and URL, and the selectors of each node."""
    lines = []
    for v in violations:
        lines.append(f"- {v['id']} ({v['impact']}): {v['help']}\n  {v['helpUrl']}")
        for node in v["nodes"][:10]:
            lines.append(f"    {json.dumps(node['target'])}: {node.get('failureSummary', '')}")
        if len(v["nodes"]) > 10:
            lines.append(f"    ... and {len(v['nodes']) - 10} more nodes")
    return "\n".join(lines)


def violations(page: Page) -> list[dict[str, Any]]:
    """Every axe violation on the page as it is now (any impact)."""
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.evaluate(AXE_JS.read_text(encoding="utf-8"))
    found: dict[str, Any] = page.evaluate(_RUN)
    result: list[dict[str, Any]] = found["violations"]
    return result


def assert_accessible(page: Page, name: str) -> None:
    """Fail, naming each rule, node and help URL, when ``page`` has a serious or critical issue."""
    failing = [v for v in violations(page) if v["impact"] in FAILING_IMPACTS]
    assert not failing, f"axe: {name} ({page.url}) has serious or critical violations:\n" + (
        _describe(failing)
    )
