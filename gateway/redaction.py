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
  Bodies are read by name too (:meth:`Redactor.redact_body`): a JSON body's credential-named
  keys, even in a body cut short, and a form body's credential-named fields.
* **By value.** Every secret registered with :meth:`Redactor.add_secret` is replaced wherever it
  appears, along with the forms it takes on the wire: URL-quoted (``quote``, ``quote_plus``),
  JSON-escaped, and base64 (standard and URL-safe, padded or not, and the fragments that stay
  stable when the value sits inside a longer base64 blob). Values shorter than
  :data:`MIN_SECRET_LENGTH` characters are **not** redacted by value: replacing every ``"abc"`` in
  a response would mangle text while protecting nothing. They are still caught by name.
  :meth:`Redactor.add_named_credentials` registers the values a request carries under
  credential names (a literal ``Authorization: Bearer ...`` in a definition, a ``password`` key
  in its body), so an API that echoes them back is redacted too; such values are registered only
  from :data:`MIN_NAMED_LENGTH` characters, as short ones are rarely credentials and often words.
  Text that was cut off (:meth:`Redactor.redact_cut`) also loses a secret's first characters
  left at its very end.

The placeholder is always exactly :data:`REDACTED`.
"""

from __future__ import annotations

import base64
import functools
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import suppress
from typing import Any
from urllib.parse import parse_qsl, quote, quote_plus, unquote_plus, urlsplit

__all__ = [
    "CREDENTIAL_HEADERS",
    "CREDENTIAL_PARAMS",
    "MIN_NAMED_LENGTH",
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

MIN_NAMED_LENGTH = 8
"""Values found under credential names are registered for redaction by value from this length."""

_AUTH_SCHEMES = ("bearer ", "basic ", "token ", "digest ", "apikey ")
# The JSON tokens that matter for finding keys: strings (possibly cut off), colons, brackets.
# Strings are always taken whole from their opening quote, so the walk never loses alignment.
_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"?|[:{}\[\]]')
# A value after a colon: a string, the start of an object or array, or a bare word or number.
_JSON_VALUE = re.compile(r'\s*("(?:[^"\\]|\\.)*"?|[{\[]|[^\s,:{}\[\]"]+)')
_NOTHING_SENT = frozenset({'""', "null", "true", "false"})  # missing, empty or a flag
# A quick look for a key that may be credential-named (a superset of the rules above): ``in``
# on the lower-cased text is some twenty times faster than a regex, and the token walk, in
# Python, then only runs on the bodies that need it.
_CREDENTIAL_WORDS = (
    "auth", "token", "secret", "passw", "pwd", "sig", "apikey", "api_key", "api-key", "session",
    "cookie", "credential", "private", "subscription",
)  # fmt: skip

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


@functools.lru_cache(maxsize=4096)  # JSON bodies repeat their keys: the regex once per name
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
            self._pattern = _pattern(frozenset(self._values))
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
        shows the credential was missing, or a boolean); every string, key or value, is
        redacted by value.

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
                    and not isinstance(item, bool)  # ``"password_set": true`` says nothing
                    else self.redact_json(item)
                )
                for key, item in value.items()
            }
        if isinstance(value, list | tuple):
            return [self.redact_json(item) for item in value]
        return value

    def redact_body(self, text: str, content_type: str = "") -> str:
        """Redact a request or response body: credential-named fields, then secrets by value.

        A JSON body (by its content type, or text that starts like JSON) loses the values of
        its credential-named keys with its formatting kept, also when it was cut short or is
        not quite JSON; a form body loses its credential-named fields' values.

        Args:
            text: The body as text.
            content_type: Its ``Content-Type`` ("" when unknown).

        Returns:
            The redacted body.
        """
        media = content_type.partition(";")[0].strip().lower()
        if media == "application/x-www-form-urlencoded":
            text = _redact_params(text)
        elif media.endswith(("/json", "+json")) or text.lstrip()[:1] in ("{", "["):
            text = _redact_json_text(text)
        return self.redact_text(text)

    def redact_cut(self, text: str) -> str:
        """:meth:`redact_text` for text that was cut off: a secret's beginning at the end goes too.

        Args:
            text: Text whose end is not the end of what was sent (a body cut at a size cap).

        Returns:
            ``text`` redacted, with a trailing piece of a secret replaced by :data:`REDACTED`.
        """
        text = self.redact_text(text)
        longest = 0
        for form in self._values:
            for length in range(min(len(form), len(text) + 1) - 1, longest, -1):
                if length >= MIN_SECRET_LENGTH and text.endswith(form[:length]):
                    longest = length
                    break
        return text[:-longest] + REDACTED if longest else text

    def add_named_credentials(
        self,
        headers: Mapping[str, str],
        url: str = "",
        body: str | None = None,
        content_type: str = "",
    ) -> None:
        """Register what a request carries under credential names, for redaction by value.

        Covers credential-named headers (and the credential after an auth scheme such as
        ``Bearer``), query parameters, a URL's password, and JSON or form body fields; values
        shorter than :data:`MIN_NAMED_LENGTH` are skipped.

        Args:
            headers: The request's headers.
            url: The request's URL.
            body: The request body as text, if any.
            content_type: The body's ``Content-Type``.
        """
        for value in _named_values(headers, url, body, content_type):
            if len(value) >= MIN_NAMED_LENGTH:
                self.add_secret(value)

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


@functools.lru_cache(maxsize=64)
def _pattern(values: frozenset[str]) -> re.Pattern[str]:
    # Executions of one action usually learn the same values (its literal credentials): their
    # redactors share one compiled pattern instead of building it every time.
    return re.compile(_trie_pattern(values))


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


def _json_key(token: str) -> str:
    if "\\" not in token:
        return token[1:-1] if token.endswith('"') and len(token) > 1 else token[1:]
    with suppress(ValueError):
        key = json.loads(token)
        if isinstance(key, str):
            return key
    return token.strip('"')


def _value_end(tokens: Iterator[re.Match[str]], value: re.Match[str], size: int) -> int:
    """Where ``value`` ends: the token itself, or the bracket that closes its object or array."""
    if value[1] not in ("{", "["):
        return value.end()
    depth = 0  # the value's own bracket is the next token
    for token in tokens:
        if token[0] in ("{", "["):
            depth += 1
        elif token[0] in ("}", "]"):
            depth -= 1
            if depth == 0:
                return token.end()
    return size  # cut off inside the value: the rest of the text is the value


def _redact_json_text(text: str) -> str:
    """JSON text with the values of credential-named keys replaced, everything else kept.

    Reads token by token rather than parsing, so a body cut at a size cap, or one that is not
    quite JSON, is covered too, and the stored text keeps its formatting.
    """
    lowered = text.lower()
    if "\\u" not in text and not any(word in lowered for word in _CREDENTIAL_WORDS):
        return text  # an escaped key could hide its name from the quick look: walk those too
    parts: list[str] = []
    kept = 0  # text before this offset is in ``parts`` (or replaced)
    key: re.Match[str] | None = None
    tokens = _JSON_TOKEN.finditer(text)
    for token in tokens:
        if token.start() < kept:
            continue  # inside a value already replaced
        if token[0] != ":":
            key = token if token[0][0] == '"' else None
            continue
        if key is not None and _is_credential_json_key(_json_key(key[0])):
            value = _JSON_VALUE.match(text, token.end())
            if value is not None and value[1] not in _NOTHING_SENT:
                parts += [text[kept : value.start(1)], json.dumps(REDACTED)]
                kept = _value_end(tokens, value, len(text))
        key = None
    return "".join([*parts, text[kept:]]) if parts else text


def _leaves(value: Any) -> Iterator[str]:
    """Every string or number inside a JSON value, as text."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        yield str(value)
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _leaves(item)
    elif isinstance(value, list):
        for item in value:
            yield from _leaves(item)


def _named_json(value: Any) -> Iterator[str]:
    """The values under credential-named keys anywhere in a JSON value."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(key, str) and _is_credential_json_key(key):
                yield from _leaves(item)
            else:
                yield from _named_json(item)
    elif isinstance(value, list):
        for item in value:
            yield from _named_json(item)


def _named_values(
    headers: Mapping[str, str], url: str, body: str | None, content_type: str
) -> Iterator[str]:
    """Values a request carries under credential names (see ``add_named_credentials``)."""
    for name, value in headers.items():
        if not is_credential_header(name):
            continue
        yield value
        for scheme in _AUTH_SCHEMES:
            if value[: len(scheme)].lower() == scheme:
                yield value[len(scheme) :].strip()
        if name.lower() == "cookie":
            yield from (v for _, _, v in (c.partition("=") for c in value.split(";")))
    with suppress(ValueError):
        parts = urlsplit(url)
        yield from [parts.password or ""]
        yield from (v for k, v in parse_qsl(parts.query) if is_credential_param(k))
    if not body:
        return
    media = content_type.partition(";")[0].strip().lower()
    if media == "application/x-www-form-urlencoded":
        yield from (v for k, v in parse_qsl(body) if is_credential_param(k))
    elif body.lstrip()[:1] in ("{", "["):
        with suppress(ValueError, RecursionError):
            yield from _named_json(json.loads(body))
