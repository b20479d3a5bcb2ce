"""The dashboard's SVG charts (gateway.admin.dashboard.charts): well-formed, accessible, to scale,
and escaping what they print."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from gateway.admin.dashboard.charts import (
    Bar,
    Column,
    horizontal_bars,
    nice_ticks,
    stacked_columns,
)

SVG = "{http://www.w3.org/2000/svg}"


def parse(markup: str) -> ET.Element:
    return ET.fromstring(markup)


@pytest.mark.parametrize(
    ("top", "ticks"),
    [
        (0, [0, 1]),
        (1, [0, 1]),
        (7, [0, 2, 4, 6, 8]),
        (10, [0, 2, 4, 6, 8, 10]),
        (96, [0, 20, 40, 60, 80, 100]),
        (1234, [0, 500, 1000, 1500]),
        (0.3, [0, 1]),
    ],
)
def test_ticks_are_round_and_reach_the_top(top: float, ticks: list[float]) -> None:
    assert nice_ticks(top) == ticks


def test_columns_stack_their_series_to_scale() -> None:
    columns = [
        Column("09:00", (3, 1, 0), tick=True),
        Column("2026-12-07 10:00", (6, 0, 2)),
        Column("11:00", (0, 0, 0), tick=True),
    ]
    svg = parse(
        stacked_columns(
            columns,
            series=("Successes", "Failures", "Refusals"),
            title="Executions per hour",
            description="12 executions",
            y_label="executions",
        )
    )
    assert svg.get("role") == "img"
    title, desc = svg.find(f"{SVG}title"), svg.find(f"{SVG}desc")
    assert title is not None and desc is not None
    assert title.text == "Executions per hour" and desc.text == "12 executions"
    assert svg.get("aria-labelledby") == f"{title.get('id')} {desc.get('id')}"
    groups = svg.findall(f"{SVG}g")
    assert [g.find(f"{SVG}title").text for g in groups] == [  # type: ignore[union-attr]
        "09:00: Successes 3, Failures 1, Refusals 0",
        "2026-12-07 10:00: Successes 6, Failures 0, Refusals 2",
        "11:00: Successes 0, Failures 0, Refusals 0",
    ]
    heights = [
        [(r.get("class"), float(r.get("height", 0))) for r in g.findall(f"{SVG}rect")]
        for g in groups
    ]
    assert [len(h) for h in heights] == [2, 2, 0]  # zero values draw nothing
    unit = heights[0][0][1] / 3
    assert heights[0][1] == ("chart-series-1", pytest.approx(unit, abs=0.15))
    assert heights[1] == [
        ("chart-series-0", pytest.approx(6 * unit, abs=0.15)),
        ("chart-series-2", pytest.approx(2 * unit, abs=0.15)),
    ]
    texts = [t.text for t in svg.iter(f"{SVG}text")]
    assert "09:00" in texts and "11:00" in texts and "2026-12-07 10:00" not in texts  # ticks only
    assert {"0", "2", "4", "6", "8"} <= set(texts)  # the y axis: the tallest column is 8
    assert "style" not in str(
        stacked_columns(columns, series=("a", "b", "c"), title="t", description="d", y_label="y")
    )


def test_bars_are_to_scale_and_long_labels_are_cut_with_the_full_text_kept() -> None:
    long = "a_very_long_action_name_that_goes_on_and_on"
    svg = parse(
        horizontal_bars(
            [Bar("book_a_demo", 200, "200"), Bar(long, 50, "50")],
            title="Executions per action",
            description="book_a_demo 200; ...",
        )
    )
    rects = [float(r.get("width", 0)) for r in svg.iter(f"{SVG}rect")]
    assert rects[0] == pytest.approx(4 * rects[1])
    labels = [t.text or "" for t in svg.iter(f"{SVG}text") if t.get("class") == "chart-label"]
    assert labels[0] == "book_a_demo" and labels[1].endswith("…") and len(labels[1]) == 20
    tooltips = [g.find(f"{SVG}title").text for g in svg.findall(f"{SVG}g")]  # type: ignore[union-attr]
    assert tooltips == ["book_a_demo: 200", f"{long}: 50"]


def test_text_is_escaped() -> None:
    hostile = '<script>alert(1)</script>&"'
    markup = horizontal_bars(
        [Bar(hostile, 1, hostile)], title=hostile, description=hostile, label_chars=80
    )
    assert "<script>" not in markup
    svg = parse(markup)  # still well-formed
    assert svg.find(f"{SVG}title").text == hostile  # type: ignore[union-attr]


def test_an_empty_chart_still_has_axes_and_its_title() -> None:
    svg = parse(horizontal_bars([], title="p95 per action", description="no executions"))
    assert svg.find(f"{SVG}desc").text == "no executions"  # type: ignore[union-attr]
    assert [t.text for t in svg.iter(f"{SVG}text") if t.get("class") == "chart-tick"] == ["0", "1"]
    two = parse(stacked_columns([], series=("a",), title="t", description="d", y_label="y"))
    assert two.get("role") == "img"
    # Every chart gets ids of its own, so two on one page never share a title.
    first, second = (str(horizontal_bars([], title="x", description="y")) for _ in range(2))
    assert parse(first).get("aria-labelledby") != parse(second).get("aria-labelledby")
