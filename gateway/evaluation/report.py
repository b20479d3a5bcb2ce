"""The eval report as text: one table per config, or two side by side (``--compare``)."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.evaluation.run import ActionScore, EvalReport

__all__ = ["Failing", "compare_text", "failing_cases", "percent", "report_text"]


def percent(value: float | None) -> str:
    """A rate as the report prints it: ``50 %``, or ``—`` when nothing was counted."""
    return "—" if value is None else f"{100 * value:.0f} %"


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return [line(headers), *(line(r) for r in rows)]


def _row(tool: str, s: ActionScore) -> list[str]:
    return [
        tool,
        str(s.correct_calls),
        str(s.false_triggers),
        str(s.missed),
        percent(s.precision),
        percent(s.recall),
        percent(s.false_trigger_rate),
        str(s.argument_mismatches),
    ]


def _what_went_wrong(report: EvalReport, tool: str, case: str) -> str:
    """``missed``, ``false trigger`` or ``wrong arguments (x, y)``, as seen in that case."""
    seen: dict[str, None] = {}
    for v in report.verdicts:
        if v.case != case or tool not in v.outcomes:
            continue
        if v.outcomes[tool] in ("missed", "false_trigger"):
            seen[v.outcomes[tool].replace("_", " ")] = None
        elif tool in v.mismatches:
            seen[f"wrong arguments ({', '.join(v.mismatches[tool])})"] = None
    return " / ".join(seen)


@dataclass(frozen=True)
class Failing:
    """One case an action came out wrong in."""

    action: str
    case: str
    what: str
    """``missed``, ``false trigger`` or ``wrong arguments (x, y)``."""
    runs: int
    """In how many runs."""


def failing_cases(report: EvalReport) -> list[Failing]:
    """Every (action, case) that came out wrong in some run, action by action."""
    return [
        Failing(tool, case, _what_went_wrong(report, tool, case), times)
        for tool, score in report.actions.items()
        for case, times in score.failing.items()
    ]


def _failing(report: EvalReport) -> list[str]:
    return [
        f"  {f.action}: {f.what} in {f.case!r} ({f.runs} of {report.runs} runs)"
        for f in failing_cases(report)
    ]


def report_text(report: EvalReport) -> str:
    """Per-action counts and rates, the failing cases, and the threshold verdict."""
    headers = ["action", "correct", "false", "missed", "precision", "recall", "false-trigger"]
    headers.append("arg-mismatch")
    rows = [_row(tool, score) for tool, score in report.actions.items()]
    cases = len({v.case for v in report.verdicts})
    lines = [f"{report.label}: {cases} cases x {report.runs} runs", *_table(headers, rows)]
    failing = _failing(report)
    if failing:
        lines += ["", "Failing cases:", *failing]
    lines.append("")
    if report.failures:
        lines.append("Thresholds NOT met: " + "; ".join(report.failures))
    else:
        lines.append("Thresholds met." if report.thresholds_set else "No thresholds set.")
    return "\n".join(lines) + "\n"


def compare_text(a: EvalReport, b: EvalReport) -> str:
    """Both configs per action: precision, recall and false-trigger rate, A -> B."""
    headers = ["action", "precision A -> B", "recall A -> B", "false-trigger A -> B", "missed"]
    rows = []
    for tool in dict.fromkeys([*a.actions, *b.actions]):
        sa, sb = a.actions.get(tool, ActionScore()), b.actions.get(tool, ActionScore())
        rows.append(
            [
                tool,
                f"{percent(sa.precision)} -> {percent(sb.precision)}",
                f"{percent(sa.recall)} -> {percent(sb.recall)}",
                f"{percent(sa.false_trigger_rate)} -> {percent(sb.false_trigger_rate)}",
                f"{sa.missed} -> {sb.missed}",
            ]
        )
    lines = [f"A = {a.label}", f"B = {b.label}", *_table(headers, rows), ""]
    lines += ["--- A", report_text(a), "--- B", report_text(b)]
    return "\n".join(lines)
