"""Dashboard sessions: a signed cookie carrying the login state and a CSRF token.

The cookie is ``base64(json).hmac`` with a key made when the dashboard is built, so sessions end
when the process restarts (operators log in again with the admin token). Every form carries the
session's CSRF token; a POST whose token does not match is refused.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

import orjson

__all__ = ["COOKIE", "Session", "SessionSigner"]

COOKIE = "actiongate_session"
MAX_AGE_S = 12 * 3600


@dataclass(slots=True, frozen=True)
class Session:
    """One browser's session."""

    csrf: str
    admin: bool = False
    expires: float = 0.0


class SessionSigner:
    """Signs and checks session cookies with a per-process random key."""

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key or secrets.token_bytes(32)

    def new(self, *, admin: bool) -> Session:
        """A fresh session with a new CSRF token."""
        return Session(secrets.token_urlsafe(24), admin, time.time() + MAX_AGE_S)

    def dump(self, session: Session) -> str:
        """The cookie value for ``session``."""
        data = {"csrf": session.csrf, "admin": session.admin, "exp": session.expires}
        payload = base64.urlsafe_b64encode(orjson.dumps(data)).decode().rstrip("=")
        return f"{payload}.{self._sign(payload)}"

    def load(self, value: str | None) -> Session | None:
        """The session in a cookie value, or None when it is missing, forged or expired."""
        if not value or "." not in value:
            return None
        payload, _, signature = value.rpartition(".")
        if not hmac.compare_digest(signature, self._sign(payload)):
            return None
        try:
            data = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            session = Session(str(data["csrf"]), bool(data["admin"]), float(data["exp"]))
        except (ValueError, KeyError, TypeError):
            return None
        return session if session.expires > time.time() else None

    def _sign(self, payload: str) -> str:
        digest = hmac.new(self._key, payload.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")
