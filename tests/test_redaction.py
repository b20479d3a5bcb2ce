"""Credential redaction: by name, by value (with derived forms), and the short-value rule."""

from __future__ import annotations

import base64
import json
import string
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.redaction import (
    CREDENTIAL_HEADERS,
    REDACTED,
    Redactor,
    is_credential_header,
    is_credential_param,
)

SECRET = "sk-live/4f9a+8b7c 6d5e"  # has characters that URL-quoting and base64 change


@pytest.fixture
def redactor() -> Redactor:
    return Redactor([SECRET])


# --- By name ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CREDENTIAL_HEADERS))
def test_listed_headers_are_redacted_by_name_and_keep_their_name(name: str) -> None:
    headers = {name.title(): "literal value", "Accept": "application/json"}
    assert Redactor().redact_headers(headers) == {
        name.title(): REDACTED,
        "Accept": "application/json",
    }


@pytest.mark.parametrize(
    "name",
    [
        "X-My-Secret",
        "X-Session-Id",
        "X-Upstream-Password",
        "X-Custom-Auth",
        "X-Client-Signature",
        "My-Api-Key",
        "X_API_KEY",
        "Refresh-Token",
        "X-Credential",
    ],
)
def test_credential_like_header_names_are_redacted(name: str) -> None:
    assert is_credential_header(name)
    assert Redactor().redact_headers({name: "v4lue"}) == {name: REDACTED}


@pytest.mark.parametrize(
    "name", ["Content-Type", "Author", "X-Authority", "X-Max-Tokens", "X-Request-Id", "Accept"]
)
def test_ordinary_header_names_are_kept(name: str) -> None:
    assert not is_credential_header(name)
    assert Redactor().redact_headers({name: "value"}) == {name: "value"}


def test_seed_example_literal_authorization_is_redacted() -> None:
    headers = {"Authorization": "Bearer YOUR_API_KEY", "Content-Type": "application/json"}
    assert Redactor().redact_headers(headers) == {
        "Authorization": REDACTED,
        "Content-Type": "application/json",
    }


def test_empty_credential_header_stays_empty_to_show_it_was_missing() -> None:
    assert Redactor().redact_headers({"Authorization": ""}) == {"Authorization": ""}


@pytest.mark.parametrize(
    "name", ["api_key", "API_KEY", "key", "access_token", "client_secret", "sig", "X-Amz-Signature"]
)
def test_credential_query_params_are_redacted_by_name(name: str) -> None:
    assert is_credential_param(name)
    url = f"https://api.example.com/v1/items?q=shoes&{name}=abc123xyz&page=2"
    assert Redactor().redact_url(url) == (
        f"https://api.example.com/v1/items?q=shoes&{name}={REDACTED}&page=2"
    )


def test_param_names_are_matched_after_url_decoding() -> None:
    assert (
        Redactor().redact_url("https://h/p?api%5Fkey=abc123") == f"https://h/p?api%5Fkey={REDACTED}"
    )


def test_code_param_is_not_a_credential() -> None:
    url = "https://api.example.com/countries?code=US&zip_code=10001"
    assert Redactor().redact_url(url) == url


def test_url_userinfo_password_and_fragment_tokens_are_redacted() -> None:
    url = "https://bob:pa55word@db.example.com:8443/x?y=1#access_token=eyJabc&state=s1"
    assert Redactor().redact_url(url) == (
        f"https://bob:{REDACTED}@db.example.com:8443/x?y=1#access_token={REDACTED}&state=s1"
    )


def test_url_without_credentials_is_kept_byte_for_byte() -> None:
    url = "https://api.example.com/a%20b/c?email=a%40b.c&x=&flag#frag"
    assert Redactor().redact_url(url) == url


def test_json_credential_keys_are_redacted_recursively() -> None:
    body: dict[str, Any] = {
        "user": {"email": "a@b.c", "password": "hunter22", "api_key": 12345},
        "items": [{"session_id": "s-1", "name": "shoe"}],
        "client_secret": None,
        "key": "JIRA-123",
        "max_tokens": 100,
        "author": "Ann",
    }
    assert Redactor().redact_json(body) == {
        "user": {"email": "a@b.c", "password": REDACTED, "api_key": REDACTED},
        "items": [{"session_id": REDACTED, "name": "shoe"}],
        "client_secret": None,  # null shows the credential was missing
        "key": "JIRA-123",  # an identifier in JSON; only `?key=` is a credential
        "max_tokens": 100,
        "author": "Ann",
    }
    assert body["user"]["password"] == "hunter22"  # the input is not modified


# --- By value ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "form",
    [
        SECRET,
        quote(SECRET, safe=""),
        quote(SECRET),
        quote_plus(SECRET),
        quote(SECRET, safe="").lower(),
        json.dumps(SECRET)[1:-1],
        base64.b64encode(SECRET.encode()).decode(),
        base64.urlsafe_b64encode(SECRET.encode()).decode().rstrip("="),
    ],
)
def test_secret_is_redacted_in_every_derived_form(redactor: Redactor, form: str) -> None:
    assert redactor.redact_text(f"before {form} after") == f"before {REDACTED} after"


def test_secret_with_json_special_characters_is_redacted_in_json_text() -> None:
    secret = 'pa"ss\\word/é'
    dumped = json.dumps({"note": f"uses {secret}"})
    assert secret not in Redactor([secret]).redact_text(dumped)
    assert REDACTED in Redactor([secret]).redact_text(dumped)
    assert REDACTED in Redactor([secret]).redact_text(json.dumps(secret, ensure_ascii=False))


def test_basic_credentials_are_redacted_as_header_token_and_password() -> None:
    redactor = Redactor()
    redactor.add_basic_credentials("alice", "correct horse")
    token = base64.b64encode(b"alice:correct horse").decode()
    assert (
        redactor.redact_text(f"Authorization: Basic {token}") == f"Authorization: Basic {REDACTED}"
    )
    assert redactor.redact_text("login failed for correct horse") == f"login failed for {REDACTED}"
    assert redactor.redact_text("user alice") == "user alice"  # the user name alone is not secret


@pytest.mark.parametrize("prefix", [b"", b"u", b"us", b"user:", b'{"k":"'])
def test_secret_inside_a_longer_base64_blob_is_redacted(prefix: bytes) -> None:
    blob = base64.b64encode(prefix + b"ghp_0123456789abcdef" + b'"}').decode()
    redacted = Redactor(["ghp_0123456789abcdef"]).redact_text(blob)
    assert REDACTED in redacted


def test_secrets_in_json_bodies_error_text_and_urls(redactor: Redactor) -> None:
    body = {"note": f"token is {SECRET}", "list": [SECRET, 3], SECRET: "key holds it"}
    assert redactor.redact_json(body) == {
        "note": f"token is {REDACTED}",
        "list": [REDACTED, 3],
        REDACTED: "key holds it",
    }
    error = f"GET https://h/x?q={quote_plus(SECRET)} failed: 401 for {SECRET}"
    assert redactor.redact_text(error) == f"GET https://h/x?q={REDACTED} failed: 401 for {REDACTED}"
    assert redactor.redact_url(f"https://h/items/{quote(SECRET, safe='')}") == (
        f"https://h/items/{REDACTED}"
    )
    assert redactor.redact_headers({"X-Note": f"v {SECRET}"}) == {"X-Note": f"v {REDACTED}"}


def test_redact_request_covers_url_headers_and_body(redactor: Redactor) -> None:
    request = {
        "method": "POST",
        "url": f"https://h/x?key=k1234&q={quote_plus(SECRET)}",
        "headers": {"X-Functions-Key": "literal", "Accept": "*/*"},
        "body": {"password": "pw", "text": SECRET},
    }
    assert redactor.redact_request(request) == {
        "method": "POST",
        "url": f"https://h/x?key={REDACTED}&q={REDACTED}",
        "headers": {"X-Functions-Key": REDACTED, "Accept": "*/*"},
        "body": {"password": REDACTED, "text": REDACTED},
    }


def test_short_values_are_only_redacted_by_name() -> None:
    redactor = Redactor(["abc"])
    assert not redactor.has_secrets
    assert redactor.redact_text("abc abcdef") == "abc abcdef"
    assert redactor.redact_headers({"X-Api-Key": "abc"}) == {"X-Api-Key": REDACTED}


def test_longest_secret_wins_when_one_contains_another() -> None:
    redactor = Redactor(["abcd1234", "abcd1234-extended"])
    assert redactor.redact_text("x abcd1234-extended y") == f"x {REDACTED} y"
    assert redactor.redact_text("x abcd1234 y") == f"x {REDACTED} y"


def test_no_secrets_is_a_no_op() -> None:
    text = "nothing to hide " * 100
    assert Redactor().redact_text(text) is text


def test_child_adds_secrets_without_touching_the_parent(redactor: Redactor) -> None:
    child = redactor.child("oauth-token-987654")
    assert child.redact_text(f"{SECRET} oauth-token-987654") == f"{REDACTED} {REDACTED}"
    assert redactor.redact_text("oauth-token-987654") == "oauth-token-987654"
    copy = redactor.copy()
    copy.add_secret("another-one-1234")
    assert redactor.redact_text("another-one-1234") == "another-one-1234"
    assert copy.redact_text(SECRET) == REDACTED


def test_adding_a_secret_after_use_takes_effect(redactor: Redactor) -> None:
    assert redactor.redact_text("late-secret-1") == "late-secret-1"
    redactor.add_secret("late-secret-1")
    assert redactor.redact_text("late-secret-1") == REDACTED


# The placeholder's characters are kept out so a replacement can never spell a secret.
_ALPHABET = string.ascii_lowercase + string.digits + " -_/+=:.%\"'\\@é"
_texts = st.text(alphabet=_ALPHABET, max_size=40)


@given(
    secrets=st.lists(st.text(alphabet=_ALPHABET, min_size=4, max_size=30), min_size=1, max_size=5),
    before=_texts,
    after=_texts,
)
def test_no_registered_secret_survives_in_any_form(
    secrets: list[str], before: str, after: str
) -> None:
    redactor = Redactor(secrets)
    for secret in secrets:
        for form in (
            secret,
            quote(secret, safe=""),
            quote_plus(secret),
            json.dumps(secret)[1:-1],
            base64.b64encode(secret.encode()).decode(),
        ):
            assert form not in redactor.redact_text(before + form + after)
