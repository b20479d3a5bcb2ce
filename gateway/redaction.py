"""Credential redaction for logs, errors and responses (README, "Execution engine").

Two independent rules remove credentials, and both always run:

* **By name.** A header, query parameter or JSON key that is named like a credential keeps its
  name but its value becomes ``[REDACTED]``, even when the value is a literal (the seed action's
  ``Authorization: Bearer YOUR_API_KEY``). A name is credential-like when it is listed in
  :data:`CREDENTIAL_HEADERS` / :data:`CREDENTIAL_PARAMS`, or when, lower-cased with ``-`` read as
  ``_``, it contains ``auth`` (but not ``author``/``authority``), ``token`` (but not the plural
  counters ``tokens``/``max_tokens``), ``secret``, ``password``, ``passwd``, ``api_key``,
  ``apikey``, ``session``, ``cookie``, ``signature``, ``credential`` or ``private_key``.
  The bare query name ``code`` (an OAuth authorization code) is *not* listed: it is far more often
  a country, promo or zip code, and an authorization code is single-use and short-lived.
* **By value.** Every secret registered with :meth:`Redactor.add_secret` is replaced wherever it
  appears, along with the forms it takes on the wire: URL-quoted (``quote``, ``quote_plus``),
  JSON-escaped, and base64 (standard and URL-safe, padded or not, and the fragments that stay
  stable when the value sits inside a longer base64 blob). Values shorter than
  :data:`MIN_SECRET_LENGTH` characters are **not** redacted by value: replacing every ``"abc"`` in
  a response would mangle text while protecting nothing. They are still caught by name.

The placeholder is always exactly :data:`REDACTED`.
"""

from __future__ import annotations

import base64
import functools
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, quote_plus, unquote_plus

__all__ = [
    "CREDENTIAL_HEADERS",
    "CREDENTIAL_PARAMS",
    "MIN_SECRET_LENGTH",
    "REDACTED",
    "Redactor",
    "is_credential_header",
    "is_credential_name",
    "is_credential_param",
]

REDACTED = "[REDACTED]"
"""What a redacted value is replaced with."""

MIN_SECRET_LENGTH = 4
"""Values shorter than this are only redacted by name, never by value."""

# Fragments of a value found inside a longer base64 blob are shorter than the value's own base64;
# below this length they would match ordinary text too often to be worth it.
_MIN_FRAGMENT_LENGTH = 8

# fmt: off
CREDENTIAL_HEADERS: frozenset[str] = frozenset({
    "authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "api-key",
    "apikey", "x-auth-token", "x-access-token", "x-csrf-token", "x-xsrf-token",
    "x-amz-security-token", "x-goog-api-key", "x-functions-key", "ocp-apim-subscription-key",
    "private-token", "x-vault-token", "x-shopify-access-token", "x-hub-signature",
    "x-hub-signature-256",
})
"""Header names (lower-case) that always carry credentials, beyond the substring rule."""

CREDENTIAL_PARAMS: frozenset[str] = frozenset({
    "access_token", "refresh_token", "id_token", "api_key", "api-key", "apikey", "key", "token",
    "auth", "secret", "client_secret", "password", "passwd", "pwd", "sig", "signature",
    "subscription-key", "x-amz-credential", "x-amz-signature", "x-amz-security-token",
})
# fmt: on
"""Query-parameter names (lower-case) that always carry credentials, beyond the substring rule."""

# `auth` but not `author…`/`authority` (yet `authorization`/`authorisation` again);
# `token` but not plural counters such as `max_tokens` or `tokens_used`.
_CREDENTIAL_NAME = re.compile(
    r"auth(?!or(?!i[sz]))|token(?!s(?:$|_))|secret|passw(?:or)?d|api_?key"
    r"|session|cookie|signature|credential|private_?key"
)

# JSON bodies use `key` for ordinary identifiers (Jira issue keys, key/value pairs); only the
# query-string convention (`?key=` for Google APIs) makes it a credential there.
_NOT_CREDENTIAL_JSON_KEYS = frozenset({"key"})

_PERCENT_ESCAPE = re.compile(r"%[0-9A-F]{2}")


def is_credential_name(name: str) -> bool:
    """Whether ``name`` matches the substring rule (see the module docstring)."""
    return _CREDENTIAL_NAME.search(name.lower().replace("-", "_")) is not None


def is_credential_header(name: str) -> bool:
    """Whether the header called ``name`` carries a credential."""
    return name.lower() in CREDENTIAL_HEADERS or is_credential_name(name)


def is_credential_param(name: str) -> bool:
    """Whether the query parameter called ``name`` carries a credential."""
    return name.lower() in CREDENTIAL_PARAMS or is_credential_name(name)


def _is_credential_json_key(name: str) -> bool:
    lowered = name.lower()
    if lowered in _NOT_CREDENTIAL_JSON_KEYS:
        return False
    return lowered in CREDENTIAL_PARAMS or is_credential_name(name)


def _base64_forms(raw: bytes) -> set[str]:
    """The value's base64 forms, plus the pieces that survive inside any longer blob.

    A value at byte offset 0, 1 or 2 (mod 3) of a larger payload encodes to one of three
    different strings; dropping the characters shared with its neighbours leaves a part that is
    identical whatever surrounds it.
    """
    forms: set[str] = set()
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        whole = encode(raw).decode("ascii")
        forms.update((whole, whole.rstrip("=")))
        for offset in range(3):
            padded = encode(b"\0" * offset + raw).decode("ascii").rstrip("=")
            # Characters touching the zero prefix or the unknown suffix depend on the neighbours.
            start = -(-offset * 4 // 3)
            end = (offset + len(raw)) * 4 // 3
            fragment = padded[start:end]
            if len(fragment) >= _MIN_FRAGMENT_LENGTH:
                forms.add(fragment)
    return forms


@functools.lru_cache(maxsize=1024)
def _derived_forms(value: str) -> frozenset[str]:
    """``value`` as it may appear after URL-quoting, JSON-escaping or base64-encoding."""
    quoted = {quote(value, safe=""), quote(value), quote_plus(value)}
    # Some encoders write percent-escapes in lower case.
    quoted |= {_PERCENT_ESCAPE.sub(lambda m: m.group(0).lower(), q) for q in quoted}
    escaped = {json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]}
    forms = {value} | quoted | escaped | _base64_forms(value.encode("utf-8"))
    return frozenset(form for form in forms if len(form) >= MIN_SECRET_LENGTH)


class Redactor:
    """Removes credentials from text, headers, URLs and JSON values.

    Secrets are matched by one compiled regular expression (longest first, so a secret that
    contains another is removed whole), rebuilt lazily only after secrets change. With no
    secrets registered, :meth:`redact_text` returns its input untouched.

    A shared redactor holds the configured secrets; an execution that learns more (an OAuth
    access token, say) takes :meth:`child` and adds them there, leaving the shared one as is.
    """

    __slots__ = ("_pattern", "_shared", "_values")

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        """Create a redactor.

        Args:
            secrets: Initial secret values, registered as by :meth:`add_secret`.
        """
        self._values: set[str] = set()
        self._shared = False
        self._pattern: re.Pattern[str] | None = None
        for secret in secrets:
            self.add_secret(secret)

    def add_secret(self, value: str) -> None:
        """Register ``value`` and its derived forms for redaction by value.

        Args:
            value: The secret. Values shorter than :data:`MIN_SECRET_LENGTH` are ignored.
        """
        if len(value) < MIN_SECRET_LENGTH:
            return
        forms = _derived_forms(value)
        if not forms <= self._values:
            if self._shared:
                # Copy on first write: a per-execution child costs nothing until it learns a
                # secret its parent does not know (e.g. a fresh OAuth token).
                self._values = set(self._values)
                self._shared = False
            self._values |= forms
            self._pattern = None

    def add_basic_credentials(self, username: str, password: str) -> None:
        """Register HTTP Basic credentials: the password and the header's base64 token.

        Args:
            username: The Basic user name (not secret on its own, so not registered alone).
            password: The Basic password.
        """
        self.add_secret(password)
        self.add_secret(f"{username}:{password}")

    def copy(self) -> Redactor:
        """An independent redactor with the same secrets (sharing the compiled pattern)."""
        clone = Redactor()
        clone._values = self._values
        clone._shared = True
        self._shared = True  # neither may now change the set in place
        clone._pattern = self._pattern
        return clone

    def child(self, *secrets: str) -> Redactor:
        """A copy of this redactor with ``secrets`` added; this one is left unchanged.

        Args:
            *secrets: Extra values for this execution only, e.g. a freshly fetched token.

        Returns:
            The new redactor.
        """
        clone = self.copy()
        for secret in secrets:
            clone.add_secret(secret)
        return clone

    @property
    def has_secrets(self) -> bool:
        """Whether any value is registered (the redactor itself is always truthy)."""
        return bool(self._values)

    def _compiled(self) -> re.Pattern[str]:
        if self._pattern is None:
            self._pattern = re.compile(_trie_pattern(self._values))
        return self._pattern

    def redact_text(self, text: str) -> str:
        """Replace every registered secret (in any derived form) in ``text``.

        Args:
            text: Any text: a body, an error message, a header value.

        Returns:
            ``text`` with secrets replaced by :data:`REDACTED`.
        """
        if not self._values or not text:
            return text
        return self._compiled().sub(REDACTED, text)

    def redact_headers(self, headers: Mapping[str, str]) -> dict[str, str]:
        """Redact header values: credential-named ones entirely, the others by value.

        Args:
            headers: Header names to values.

        Returns:
            A new dict with the same names (and order).
        """
        return {
            name: (REDACTED if value else value)
            if is_credential_header(name)
            else self.redact_text(value)
            for name, value in headers.items()
        }

    def redact_url(self, url: str) -> str:
        """Redact a URL's userinfo password, credential-named query parameters and secrets.

        Parameters in the fragment are treated like query parameters, since OAuth's implicit
        flow returns tokens there. The rest of the URL is kept byte for byte.

        Args:
            url: An absolute or relative URL.

        Returns:
            The redacted URL.
        """
        rest, hash_mark, fragment = url.partition("#")
        rest, question_mark, query = rest.partition("?")
        scheme, sep, after_scheme = rest.partition("://")
        if sep:
            authority, slash, path = after_scheme.partition("/")
            userinfo, at, host = authority.rpartition("@")
            user, colon, password = userinfo.partition(":")
            if at and colon and password:
                authority = f"{user}:{REDACTED}@{host}"
            rest = f"{scheme}://{authority}{slash}{path}"
        if question_mark:
            query = _redact_params(query)
        if hash_mark and "=" in fragment:
            fragment = _redact_params(fragment)
        return self.redact_text(f"{rest}{question_mark}{query}{hash_mark}{fragment}")

    def redact_json(self, value: Any) -> Any:
        """Redact a JSON-like value recursively.

        Credential-named keys get :data:`REDACTED` (unless their value is null or empty, which
        shows the credential was missing); every string, key or value, is redacted by value.

        Args:
            value: A JSON-compatible value (dicts, lists, strings, numbers, booleans, None).

        Returns:
            A redacted copy; the input is not modified.
        """
        if isinstance(value, str):
            return self.redact_text(value)
        if isinstance(value, Mapping):
            return {
                (self.redact_text(key) if isinstance(key, str) else key): (
                    REDACTED
                    if isinstance(key, str)
                    and _is_credential_json_key(key)
                    and item not in (None, "")
                    else self.redact_json(item)
                )
                for key, item in value.items()
            }
        if isinstance(value, list | tuple):
            return [self.redact_json(item) for item in value]
        return value

    def redact_request(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """Redact a logged request ``{method, url, headers, body}``.

        Args:
            request: The request as logged; ``url`` goes through :meth:`redact_url`, ``headers``
                through :meth:`redact_headers`, everything else through :meth:`redact_json`.

        Returns:
            A redacted copy with the same keys.
        """
        redacted: dict[str, Any] = {}
        for key, value in request.items():
            if key == "url" and isinstance(value, str):
                redacted[key] = self.redact_url(value)
            elif key == "headers" and isinstance(value, Mapping):
                redacted[key] = self.redact_headers({str(k): str(v) for k, v in value.items()})
            else:
                redacted[key] = self.redact_json(value)
        return redacted


_Trie = dict[str, "_Trie"]
_END = ""  # marks "a value ends here"; real edges are one character long


def _trie_pattern(values: Iterable[str]) -> str:
    """One regular expression matching any of ``values``, preferring the longest.

    A flat ``a|b|c`` alternation makes the regex engine try every value at every position; a
    prefix tree shares that work and runs about five times faster with a few hundred values.
    Optional tails are greedy, so a value that extends another is matched whole.
    """
    root: _Trie = {}
    for value in values:
        node = root
        for char in value:
            node = node.setdefault(char, {})
        node[_END] = {}

    def build(node: _Trie) -> str:
        # Chains without branches become plain literals, so nesting (and recursion) only grows
        # with the number of branch points, not with a secret's length.
        literal: list[str] = []
        while len(node) == 1 and _END not in node:
            char, node = next(iter(node.items()))
            literal.append(char)
        branches = [re.escape(char) + build(child) for char, child in node.items() if char]
        tail = ""
        if len(branches) == 1 and _END not in node:
            tail = branches[0]
        elif branches:
            tail = "(?:" + "|".join(branches) + ")" + ("?" if _END in node else "")
        return re.escape("".join(literal)) + tail

    return build(root)


def _redact_params(query: str) -> str:
    """Blank the values of credential-named ``name=value`` pairs, keeping everything else."""
    pairs = query.split("&")
    for index, pair in enumerate(pairs):
        name, equals, value = pair.partition("=")
        if equals and value and is_credential_param(unquote_plus(name)):
            pairs[index] = f"{name}={REDACTED}"
    return "&".join(pairs)
