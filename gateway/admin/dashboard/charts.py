"""Server-side SVG charts for the dashboard: stacked columns over time and horizontal bars.

Pure functions from numbers to SVG markup, no script and no library. The dashboard's CSP
allows no inline styles, so the markup carries geometry as attributes and colours as classes
(``chart-*`` in :file:`static/dashboard.css`). Each chart is ``role="img"`` with a ``<title>``
and a ``<desc>`` that states its numbers in words; the page prints the same numbers in a table
beside it. Text is escaped; long labels are cut, with the full text in a ``<title>``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import count

from markupsafe import Markup, escape

__all__ = ["Bar", "Column", "horizontal_bars", "nice_ticks", "stacked_columns"]

_ids = count(1)


@dataclass(frozen=True, slots=True)
class Column:
    """One column of :func:`stacked_columns`: its tick label and one value per series."""

    label: str
    """Shown under the axis when it is a tick; always in the column's tooltip."""
    values: tuple[int, ...]
    tick: bool = False
    """Whether the axis labels this column."""


@dataclass(frozen=True, slots=True)
class Bar:
    """One bar of :func:`horizontal_bars`."""

    label: str
    value: float
    text: str
    """The value as printed at the bar's end (e.g. ``"1,234"`` or ``"480 ms"``)."""


def nice_ticks(top: float, most: int = 5) -> list[float]:
    """Axis ticks from 0 past ``top`` in steps of 1, 2 or 5 times a power of ten (at least 1).

    Args:
        top: The largest value to show (0 or less gives the ticks of 1).
        most: The most intervals wanted.

    Returns:
        At least two ticks, the last one at or above ``top``.
    """
    top = max(top, 1.0)
    rough = top / most
    power = 10 ** math.floor(math.log10(rough))
    # Never below 1: the charts count executions and milliseconds.
    step = max(1, next(m * power for m in (1, 2, 5, 10) if m * power >= rough))
    steps = math.ceil(top / step - 1e-9)
    return [round(i * step, 10) for i in range(steps + 1)]


def _number(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 or value == int(value) else f"{value:.1f}"


def _cut(text: str, most: int) -> str:
    return text if len(text) <= most else text[: most - 1] + "…"


def _frame(width: int, height: int, title: str, description: str, body: list[str]) -> Markup:
    n = next(_ids)
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {width} {height}"'
        f' role="img" aria-labelledby="chart-{n}-title chart-{n}-desc">'
        f'<title id="chart-{n}-title">{escape(title)}</title>'
        f'<desc id="chart-{n}-desc">{escape(description)}</desc>'
    )
    # Every text put into the parts went through escape() where it was interpolated.
    return Markup(head + "".join(body) + "</svg>")  # noqa: S704


def _y_axis(ticks: list[float], left: int, right: int, y_of: Callable[[float], float]) -> list[str]:
    parts = []
    for tick in ticks:
        y = y_of(tick)
        parts.append(f'<line class="chart-grid" x1="{left}" x2="{right}" y1="{y}" y2="{y}"/>')
        parts.append(
            f'<text class="chart-tick" x="{left - 6}" y="{y + 4}" text-anchor="end">'
            f"{escape(_number(tick))}</text>"
        )
    return parts


def stacked_columns(
    columns: Sequence[Column],
    *,
    series: Sequence[str],
    title: str,
    description: str,
    y_label: str,
    width: int = 760,
    height: int = 260,
) -> Markup:
    """Columns over time, each stacked from its series (first series at the bottom).

    Args:
        columns: In time order, each with one value per name in ``series``.
        series: Series names; series ``i`` gets the class ``chart-series-{i}``.
        title: The chart's title (shown, and its accessible name).
        description: Its numbers in words, for assistive technology.
        y_label: What the vertical axis counts.
    """
    left, right, top, bottom = 56, width - 12, 40, height - 34
    ticks = nice_ticks(max((sum(c.values) for c in columns), default=0))
    scale = (bottom - top) / ticks[-1]

    def y_of(value: float) -> float:
        return round(bottom - value * scale, 1)

    body = [
        f'<text class="chart-title" x="{left}" y="18">{escape(title)}</text>',
        f'<text class="chart-axis-label" x="12" y="{(top + bottom) // 2}" text-anchor="middle"'
        f' transform="rotate(-90 12 {(top + bottom) // 2})">{escape(y_label)}</text>',
        *_y_axis(ticks, left, right, y_of),
    ]
    for i, name in enumerate(series):  # the legend, right-aligned above the plot
        x = right - (len(series) - i) * 110
        body.append(f'<rect class="chart-series-{i}" x="{x}" y="24" width="10" height="10"/>')
        body.append(f'<text class="chart-legend" x="{x + 14}" y="33">{escape(name)}</text>')
    slot = (right - left) / max(len(columns), 1)
    gap = min(2.0, slot / 4)
    for index, column in enumerate(columns):
        left_x = round(left + index * slot + gap / 2, 1)
        base = 0
        parts = ", ".join(f"{n} {_number(v)}" for n, v in zip(series, column.values, strict=True))
        body.append(f"<g><title>{escape(column.label)}: {escape(parts)}</title>")
        for i, value in enumerate(column.values):
            if value > 0:
                y = y_of(base + value)
                h = round(y_of(base) - y, 1)
                body.append(
                    f'<rect class="chart-series-{i}" x="{left_x}" y="{y}"'
                    f' width="{round(slot - gap, 1)}" height="{h}"/>'
                )
            base += value
        body.append("</g>")
        if column.tick:
            cx = round(left_x + (slot - gap) / 2, 1)
            body.append(
                f'<line class="chart-axis" x1="{cx}" x2="{cx}" y1="{bottom}" y2="{bottom + 4}"/>'
            )
            body.append(
                f'<text class="chart-tick" x="{cx}" y="{bottom + 18}" text-anchor="middle">'
                f"{escape(column.label)}</text>"
            )
    body.append(f'<line class="chart-axis" x1="{left}" x2="{right}" y1="{bottom}" y2="{bottom}"/>')
    return _frame(width, height, title, description, body)


def horizontal_bars(
    bars: Sequence[Bar],
    *,
    title: str,
    description: str,
    width: int = 420,
    row: int = 24,
    label_chars: int = 20,
) -> Markup:
    """One horizontal bar per item, longest scale first as given, value printed at its end.

    Args:
        bars: The bars, top to bottom.
        title: The chart's title (shown, and its accessible name).
        description: Its numbers in words, for assistive technology.
        label_chars: Labels longer than this are cut (the full label is the bar's tooltip).
    """
    left, right, top = 7 * label_chars + 14, width - 70, 40  # ~7 px a character at 12 px
    bottom = top + row * max(len(bars), 1)
    height = bottom + 30
    ticks = nice_ticks(max((b.value for b in bars), default=0), most=4)
    scale = (right - left) / ticks[-1]
    body = [f'<text class="chart-title" x="8" y="18">{escape(title)}</text>']
    for tick in ticks:
        x = round(left + tick * scale, 1)
        body.append(f'<line class="chart-grid" x1="{x}" x2="{x}" y1="{top - 4}" y2="{bottom}"/>')
        body.append(
            f'<text class="chart-tick" x="{x}" y="{bottom + 16}" text-anchor="middle">'
            f"{escape(_number(tick))}</text>"
        )
    for index, bar in enumerate(bars):
        y = top + index * row
        w = round(max(bar.value, 0) * scale, 1)
        body.append(f"<g><title>{escape(bar.label)}: {escape(bar.text)}</title>")
        body.append(
            f'<text class="chart-label" x="{left - 6}" y="{y + row * 0.65:.1f}"'
            f' text-anchor="end">{escape(_cut(bar.label, label_chars))}</text>'
        )
        body.append(
            f'<rect class="chart-bar" x="{left}" y="{y + 4}" width="{w}" height="{row - 8}"/>'
        )
        body.append(
            f'<text class="chart-value" x="{left + w + 4}" y="{y + row * 0.65:.1f}">'
            f"{escape(bar.text)}</text></g>"
        )
    body.append(f'<line class="chart-axis" x1="{left}" x2="{left}" y1="{top - 4}" y2="{bottom}"/>')
    return _frame(width, height, title, description, body)
