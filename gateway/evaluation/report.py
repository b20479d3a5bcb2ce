"""The eval report as text: one table per config, or two side by side (``--compare``)."""

from __future__ import annotations

from gateway.evaluation.run import ActionScore, EvalReport

__all__ = ["compare_text", "report_text"]


def _pct(value: float | None) -> str:
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
        _pct(s.precision),
        _pct(s.recall),
        _pct(s.false_trigger_rate),
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


def _failing(report: EvalReport) -> list[str]:
    return [
        f"  {tool}: {_what_went_wrong(report, tool, case)} in {case!r} "
        f"({times} of {report.runs} runs)"
        for tool, score in report.actions.items()
        for case, times in score.failing.items()
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
                f"{_pct(sa.precision)} -> {_pct(sb.precision)}",
                f"{_pct(sa.recall)} -> {_pct(sb.recall)}",
                f"{_pct(sa.false_trigger_rate)} -> {_pct(sb.false_trigger_rate)}",
                f"{sa.missed} -> {sb.missed}",
            ]
        )
    lines = [f"A = {a.label}", f"B = {b.label}", *_table(headers, rows), ""]
    lines += ["--- A", report_text(a), "--- B", report_text(b)]
    return "\n".join(lines)
