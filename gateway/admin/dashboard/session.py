"""Dashboard sessions: a signed cookie carrying the login state and a CSRF token.

The cookie is signed by itsdangerous (``URLSafeTimedSerializer``, HMAC-SHA256, timestamped, so
a cookie older than :data:`MAX_AGE_S` is refused) with a key derived by HKDF-SHA256 from the
secret it is given: the dashboard passes one derived from the admin token, so every replica
accepts the same cookie and rotating the token ends every session. Every form carries the
session's CSRF token; :func:`csrf_matches` compares it in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any

from itsdangerous import BadData, URLSafeTimedSerializer

__all__ = ["COOKIE", "MAX_AGE_S", "Session", "SessionSigner", "csrf_matches", "session_key"]

COOKIE = "actiongate_session"
MAX_AGE_S = 12 * 3600
_HKDF_SALT = b"actiongate dashboard"
_HKDF_INFO = b"actiongate/dashboard/session-cookie/v2"
_SERIALIZER_SALT = "actiongate.dashboard.session"


@dataclass(slots=True, frozen=True)
class Session:
    """One browser's session."""

    csrf: str
    admin: bool = False
    expires: float = 0.0


def session_key(secret: bytes) -> bytes:
    """The cookie-signing key for ``secret``: HKDF-SHA256 with this use's own label."""
    # Imported here: OpenSSL's bindings take ~8 MB of every worker that never serves a login.
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=_HKDF_SALT, info=_HKDF_INFO)
    return hkdf.derive(secret)


def csrf_matches(session: Session | None, presented: str | None) -> bool:
    """Whether ``presented`` is the session's CSRF token (constant-time; any text is safe)."""
    if session is None or not presented:
        return False
    return hmac.compare_digest(presented.encode(), session.csrf.encode())


class SessionSigner:
    """Signs and checks session cookies (a random key when none is given: this process only)."""

    def __init__(self, secret: bytes | None = None) -> None:
        self._serializer = URLSafeTimedSerializer(
            session_key(secret or secrets.token_bytes(32)),
            salt=_SERIALIZER_SALT,
            # The key is HKDF's output already; itsdangerous would otherwise hash it again
            # (and sign with SHA-1 by default).
            signer_kwargs={"key_derivation": "none", "digest_method": hashlib.sha256},
        )

    def new(self, *, admin: bool) -> Session:
        """A fresh session with a new CSRF token."""
        return Session(secrets.token_urlsafe(24), admin, time.time() + MAX_AGE_S)

    def dump(self, session: Session) -> str:
        """The cookie value for ``session``."""
        value: str = self._serializer.dumps({"csrf": session.csrf, "admin": session.admin})
        return value

    def load(self, value: str | None) -> Session | None:
        """The session in a cookie value, or None when it is missing, forged or expired."""
        if not value:
            return None
        try:
            data: Any
            data, signed_at = self._serializer.loads(
                value, max_age=MAX_AGE_S, return_timestamp=True
            )
        except BadData:  # forged, tampered, expired, malformed or not ours at all
            return None
        if not isinstance(data, dict):
            return None
        csrf, admin = data.get("csrf"), data.get("admin")
        if not isinstance(csrf, str) or not csrf or not isinstance(admin, bool):
            return None
        return Session(csrf, admin, signed_at.timestamp() + MAX_AGE_S)
