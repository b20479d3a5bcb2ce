"""Property tests: whatever a customer or the model types, each value stays inside its slot."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from gateway.definitions.actions import HttpRequest
from gateway.engine.rendering import render_request
from gateway.errors import ExecutionRefused, HeaderValueError

# Everything a value could be, including separators, encodings and template syntax.
texts = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=200
).filter(lambda s: s.strip() != "")
SECRETS = {"KEY": "s3cr3t-never-here"}


def values(v: str) -> dict[str, dict[str, str]]:
    return {"args": {"v": v}, "lead": {"email": v}, "secrets": SECRETS}


@settings(max_examples=300, deadline=None)
@given(texts)
def test_path_value_is_exactly_one_segment(v: str) -> None:
    req = HttpRequest(url="https://api.example.com/a/{{args.v}}/b")
    try:
        url = render_request(req, values(v)).url
    except ExecutionRefused:
        assert v in {".", ".."}
        return
    parts = urlsplit(url)
    assert parts.netloc == "api.example.com" and parts.query == "" and parts.fragment == ""
    segments = parts.path.split("/")
    assert len(segments) == 4 and segments[1] == "a" and segments[3] == "b"
    assert unquote(segments[2]) == v


@settings(max_examples=300, deadline=None)
@given(texts)
def test_query_value_stays_one_value(v: str) -> None:
    req = HttpRequest(
        url="https://api.example.com/p?k={{lead.email}}&z=1", query={"q": "{{args.v}}"}
    )
    url = render_request(req, values(v)).url
    parts = urlsplit(url)
    assert parts.netloc == "api.example.com" and parts.path == "/p" and parts.fragment == ""
    assert parse_qs(parts.query, keep_blank_values=True) == {"k": [v], "z": ["1"], "q": [v]}


@settings(max_examples=300, deadline=None)
@given(texts)
def test_header_value_never_splits(v: str) -> None:
    req = HttpRequest(url="https://api.example.com/", headers={"X-Customer": "{{lead.email}}"})
    try:
        headers = render_request(req, values(v)).headers
    except HeaderValueError as e:
        assert "X-Customer" in str(e)
        assert not v.isascii() or any(
            (ord(c) < 32 and c != "\t") or c in "\x7f\x85\u2028\u2029" for c in v
        )
        return
    assert headers["X-Customer"] == v
    assert "\r" not in headers["X-Customer"] and "\n" not in headers["X-Customer"]


@settings(max_examples=300, deadline=None)
@given(texts)
def test_json_leaf_is_data(v: str) -> None:
    req = HttpRequest(
        url="https://api.example.com/",
        method="POST",
        body={"note": "said: {{args.v}}", "raw": "{{lead.email}}", "fixed": 1},
    )
    rendered = render_request(req, values(v))
    assert rendered.body is not None
    assert json.loads(rendered.body) == {"note": f"said: {v}", "raw": v, "fixed": 1}


@pytest.mark.parametrize("template", ["{{ secrets.KEY }}", "{{secrets.KEY}}", "{% raw %}x"])
def test_template_text_in_a_value_is_never_rendered(template: str) -> None:
    req = HttpRequest(
        url="https://api.example.com/{{args.v}}",
        method="POST",
        headers={"X-V": "{{args.v}}"},
        query={"q": "{{args.v}}"},
        body={"v": "x {{args.v}}"},
    )
    rendered = render_request(req, values(template))
    everything = rendered.url + json.dumps(rendered.headers) + (rendered.body_text or "")
    assert SECRETS["KEY"] not in everything


@pytest.mark.parametrize("name", ["items", "keys", "values", "get", "copy"])
def test_argument_named_like_a_dict_method_is_the_argument(name: str) -> None:
    req = HttpRequest(url=f"https://api.example.com/p/{{{{args.{name}}}}}/x?q={{{{args.{name}}}}}")
    url = render_request(req, {"args": {name: "v1"}}).url
    assert url == "https://api.example.com/p/v1/x?q=v1"


def test_whole_json_body_from_one_argument_is_sent_as_json() -> None:
    req = HttpRequest(
        url="https://api.example.com/",
        method="POST",
        headers={"Content-Type": "application/json"},
        body="{{args.body}}",
    )
    rendered = render_request(req, {"args": {"body": {"a": [1, {"b": None}]}}})
    assert rendered.body is not None and json.loads(rendered.body) == {"a": [1, {"b": None}]}


# Text around plain variables is rendered without Jinja2: it must be what Jinja2 renders.
literal_texts = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="{}"), max_size=12
)
placeholders = st.sampled_from(
    ["{{args.v}}", "{{ lead.email }}", "{{- args.v }}", "{{ args.v -}}", "{{ args['v'] }}"]
)
template_sources = st.lists(st.one_of(literal_texts, placeholders), min_size=1, max_size=6).map(
    "".join
)


@settings(max_examples=400, deadline=None)
@given(template_sources, texts, st.sampled_from(["path", "query", "header", "raw"]))
def test_text_and_plain_variables_render_as_jinja_renders_them(
    source: str, v: str, escape: str
) -> None:
    from gateway.definitions.templating import _compiled, analyze, render

    assume("{{" in source)  # a template without variables is sent as written, Jinja2 unused
    assert analyze(source).pieces is not None

    def outcome(fn: Any) -> tuple[str, str]:
        try:
            return "ok", fn()
        except Exception as e:  # the same refusal either way (a header value with CR/LF)
            return "error", f"{type(e).__name__}: {e}"

    ours = outcome(lambda: render(source, values(v), escape))  # type: ignore[arg-type]
    jinja = outcome(lambda: str(_compiled(source, escape).render(values(v))))
    assert ours == jinja
