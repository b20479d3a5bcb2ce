"""The encrypted secret store: secrets set through the admin API, shared by replicas.

The README's "Admin API and dashboard" section describes it for operators.

Values are encrypted with AES-256-GCM before they reach the database (the secret's name is the
associated data, so a ciphertext cannot be moved to another name). The key is
``$ACTIONGATE_SECRET_KEY`` (any string; hashed to 32 bytes) or, when unset, derived from the
admin token — so every replica sharing the token can read the store, and rotating the token
without setting ``ACTIONGATE_SECRET_KEY`` makes stored secrets unreadable (they must be set
again). Values are write-only: nothing here returns them to a client.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import logging
import os
import re
import secrets as pysecrets
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.errors import RequestError
from gateway.redaction import MIN_SECRET_LENGTH
from gateway.stores.db import secrets as secrets_table
from gateway.stores.engines import upsert_statement

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "NAME_PATTERN",
    "UPSTREAM_KEY_REF",
    "AdminToken",
    "SecretStore",
    "client_key_matches",
    "ensure_admin_token",
    "hash_client_key",
    "is_client_key_hash",
    "needs_sealing",
    "open_agent",
    "seal_agent",
    "sealed_name",
    "store_key",
]

NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")  # "_" names are internal rows
MAX_VALUE_BYTES = 8192
_VERSION = "v1:"
_INTERNAL = "_"  # rows such as the admin token's hash are not secrets
_SEALED = "_sealed:"  # internal rows encrypted like secrets (an agent's upstream key)


UPSTREAM_KEY_REF = "@secret-store"
"""A stored agent's ``upstream.api_key``: the key itself is sealed in the store."""
_KEY_HASH = re.compile(r"^sha256:([0-9a-f]{32}):([0-9a-f]{64})$")
_SALT_BYTES = 16
log = logging.getLogger("actiongate.secrets")


def sealed_name(purpose: str, owner: str) -> str:
    """The row name of an internal encrypted value (``_sealed:upstream_api_key:support``).

    Such rows are encrypted like secrets but are not secrets: ``{{secrets.*}}`` cannot read
    them, ``/api/secrets`` neither lists nor deletes them.
    """
    return f"{_SEALED}{purpose}:{owner}"


def store_key(derive: Any) -> bytes:
    """The store's key: from ``$ACTIONGATE_SECRET_KEY``, else ``derive(b"secret-store")``."""
    given = os.environ.get("ACTIONGATE_SECRET_KEY", "")
    if given:
        return hashlib.sha256(given.encode()).digest()
    key: bytes = derive(b"secret-store")
    return key


class SecretStore:
    """Encrypted ``secrets`` rows."""

    def __init__(self, engine: AsyncEngine, key: bytes) -> None:
        self._engine = engine
        self._key = key
        self._aead: AESGCM | None = None
        self._upsert = upsert_statement(secrets_table, engine.dialect)

    def _cipher(self) -> AESGCM:
        # Made on first use: OpenSSL's bindings take ~8 MB of a worker with no stored secret.
        if self._aead is None:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM

            self._aead = AESGCM(self._key)
        return self._aead

    def _seal(self, name: str, value: str) -> str:
        nonce = os.urandom(12)
        sealed = self._cipher().encrypt(nonce, value.encode(), name.encode())
        return _VERSION + base64.b64encode(nonce + sealed).decode()

    def _open(self, name: str, stored: str) -> str | None:
        if not stored.startswith(_VERSION):
            return None
        raw = base64.b64decode(stored[len(_VERSION) :])
        from cryptography.exceptions import InvalidTag

        try:
            return self._cipher().decrypt(raw[:12], raw[12:], name.encode()).decode()
        except InvalidTag:
            return None  # written under another key: unreadable, reported by names()

    async def load(self) -> dict[str, str]:
        """Every readable secret, decrypted (for the executor only)."""
        out: dict[str, str] = {}
        async with self._engine.connect() as conn:
            rows = await conn.execute(select(secrets_table.c.name, secrets_table.c.value))
            for name, stored in rows:
                if name.startswith(_INTERNAL):
                    continue
                value = self._open(name, stored)
                if value is not None and len(value) < MIN_SECRET_LENGTH:
                    # Stored by an older version: too short to redact by value, so never used.
                    log.warning(
                        "stored secret %r is shorter than %d characters and is ignored; set it "
                        "again with a longer value",
                        name,
                        MIN_SECRET_LENGTH,
                    )
                elif value is not None:
                    out[name] = value
        return out

    async def get(self, name: str) -> str | None:
        """One secret, decrypted; None when absent, internal or unreadable with this key."""
        if name.startswith(_INTERNAL):
            return None
        async with self._engine.connect() as conn:
            stored = (
                await conn.execute(
                    select(secrets_table.c.value).where(secrets_table.c.name == name)
                )
            ).scalar_one_or_none()
        return None if stored is None else self._open(name, stored)

    async def names(self) -> list[dict[str, Any]]:
        """Names, update times and whether each is readable with the current key."""
        async with self._engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(
                        secrets_table.c.name, secrets_table.c.value, secrets_table.c.updated_at
                    ).order_by(secrets_table.c.name)
                )
            ).all()
        return [
            {
                "name": name,
                "updated_at": updated.isoformat().replace("+00:00", "Z"),
                "readable": self._open(name, stored) is not None,
            }
            for name, stored, updated in rows
            if not name.startswith(_INTERNAL)
        ]

    async def put(self, name: str, value: str) -> None:
        """Set a secret (validated: name pattern, non-empty value, at most 8 KiB)."""
        if not NAME_PATTERN.match(name):
            raise RequestError(
                422, "name must match ^[A-Za-z][A-Za-z0-9_]{0,63}$", "invalid_secret", "name"
            )
        if len(value) < MIN_SECRET_LENGTH:
            raise RequestError(
                422,
                f"secret {name!r}: the value is shorter than {MIN_SECRET_LENGTH} characters; a "
                "secret that short cannot be redacted from logs",
                "invalid_secret",
                "value",
            )
        if not value or len(value.encode()) > MAX_VALUE_BYTES or "\x00" in value:
            raise RequestError(
                422,
                f"value must be 1 to {MAX_VALUE_BYTES} bytes without NUL",
                "invalid_secret",
                "value",
            )
        row = {"name": name, "value": self._seal(name, value), "updated_at": datetime.now(UTC)}
        async with self._engine.begin() as conn:
            await conn.execute(self._upsert, [row])

    async def put_sealed(self, name: str, value: str) -> None:
        """Store an internal value encrypted (``name`` from :func:`sealed_name`)."""
        if not name.startswith(_SEALED):
            raise ValueError(f"not a sealed row name: {name[:64]!r}")
        row = {"name": name, "value": self._seal(name, value), "updated_at": datetime.now(UTC)}
        async with self._engine.begin() as conn:
            await conn.execute(self._upsert, [row])

    async def get_sealed(self, name: str) -> str | None:
        """An internal value, decrypted; None when absent or written under another key."""
        if not name.startswith(_SEALED):
            return None
        async with self._engine.connect() as conn:
            stored = (
                await conn.execute(
                    select(secrets_table.c.value).where(secrets_table.c.name == name)
                )
            ).scalar_one_or_none()
        return None if stored is None else self._open(name, stored)

    async def delete_sealed(self, name: str) -> None:
        """Remove an internal value if there is one."""
        if not name.startswith(_SEALED):
            return
        async with self._engine.begin() as conn:
            await conn.execute(delete(secrets_table).where(secrets_table.c.name == name))

    async def delete(self, name: str) -> bool:
        """Remove a secret; False when there was none."""
        if name.startswith(_INTERNAL):
            return False
        async with self._engine.begin() as conn:
            result = await conn.execute(delete(secrets_table).where(secrets_table.c.name == name))
        return bool(result.rowcount)


# --- Agents' credentials at rest ---------------------------------------------------------


def hash_client_key(key: str) -> str:
    """The stored form of an agent's client key: a salted SHA-256 (``sha256:<salt>:<digest>``).

    Client keys are bearer tokens the gateway only compares, so a fast hash suffices (as for API
    tokens generally); the salt keeps equal keys on two agents from showing as equal rows.
    """
    salt = os.urandom(_SALT_BYTES)
    return f"sha256:{salt.hex()}:{hashlib.sha256(salt + key.encode()).hexdigest()}"


def is_client_key_hash(value: Any) -> bool:
    """Whether ``value`` is a hash made by :func:`hash_client_key` (not a clear key)."""
    return isinstance(value, str) and _KEY_HASH.match(value) is not None


def client_key_matches(candidate: str, presented: bytes) -> bool:
    """Whether ``presented`` is the key ``candidate`` (clear or hashed) stands for, in constant
    time."""
    hashed = _KEY_HASH.match(candidate)
    if hashed is not None:
        digest = hashlib.sha256(bytes.fromhex(hashed[1]) + presented).digest()
        return hmac.compare_digest(digest, bytes.fromhex(hashed[2]))
    # Digests of equal length, so the time taken does not tell the clear key's length either.
    return hmac.compare_digest(
        hashlib.sha256(candidate.encode()).digest(), hashlib.sha256(presented).digest()
    )


def _upstream_key(data: dict[str, Any]) -> Any:
    upstream = data.get("upstream")
    return upstream.get("api_key") if isinstance(upstream, dict) else None


def needs_sealing(data: dict[str, Any], *, sealable: bool) -> bool:
    """Whether a stored agent still holds a clear client key (or a clear upstream key that a
    store could seal)."""
    if any(not is_client_key_hash(k) for k in data.get("api_keys") or []):
        return True
    return sealable and _upstream_key(data) not in (None, "", UPSTREAM_KEY_REF)


async def seal_agent(
    store: SecretStore | None, agent_id: str, data: dict[str, Any]
) -> dict[str, Any]:
    """An agent definition fit for the database: client keys hashed, the upstream key sealed.

    The upstream key goes into ``store`` under :func:`sealed_name` and the definition keeps
    :data:`UPSTREAM_KEY_REF`; an agent without one has any sealed key removed.

    Raises:
        RequestError: 422 for an upstream key when there is no store to seal it in.
    """
    stored = copy.deepcopy(data)
    keys = [k for k in stored.get("api_keys") or [] if k]
    stored["api_keys"] = [k if is_client_key_hash(k) else hash_client_key(k) for k in keys]
    key = _upstream_key(stored)
    name = sealed_name("upstream_api_key", agent_id)
    if key and key != UPSTREAM_KEY_REF:
        if store is None:
            raise RequestError(
                422,
                "agent: upstream.api_key: cannot be stored without the secret store",
                "invalid_definition",
                "upstream.api_key",
            )
        await store.put_sealed(name, str(key))
        stored["upstream"]["api_key"] = UPSTREAM_KEY_REF
    elif not key and store is not None:
        await store.delete_sealed(name)
    return stored


async def open_agent(
    store: SecretStore | None, agent_id: str, data: dict[str, Any]
) -> dict[str, Any]:
    """A stored agent with its sealed upstream key put back (in memory only).

    A key that cannot be read (absent, or sealed under another key) leaves
    :data:`UPSTREAM_KEY_REF` in place, so the agent's upstream refuses it rather than the
    default upstream's key being sent to the agent's own ``base_url``.
    """
    if _upstream_key(data) != UPSTREAM_KEY_REF:
        return data
    name = sealed_name("upstream_api_key", agent_id)
    key = await store.get_sealed(name) if store is not None else None
    if key is None:
        log.warning("agent %r: its upstream api_key cannot be read from the secret store", agent_id)
        return data
    return {**data, "upstream": {**data["upstream"], "api_key": key}}


# --- The admin token ---------------------------------------------------------------------

_TOKEN_ROW = "_admin_token_sha256"


class AdminToken:
    """Checks a presented admin token in constant time."""

    def __init__(self, digest: bytes) -> None:
        self._digest = digest

    def derive_key(self, purpose: bytes) -> bytes:
        """A key for ``purpose`` that every replica sharing this token derives alike."""
        return hmac.new(self._digest, b"actiongate:" + purpose, hashlib.sha256).digest()

    def accepts(self, presented: str | None) -> bool:
        """Whether ``presented`` is the admin token."""
        candidate = hashlib.sha256((presented or "").encode()).digest()
        return hmac.compare_digest(candidate, self._digest) and bool(presented)


async def ensure_admin_token(engine: AsyncEngine) -> AdminToken:
    """Use ``$ACTIONGATE_ADMIN_TOKEN``, or the stored one, or make, store and print a new one."""
    given = os.environ.get("ACTIONGATE_ADMIN_TOKEN", "")
    if given:
        return AdminToken(hashlib.sha256(given.encode()).digest())
    token = pysecrets.token_urlsafe(32)
    digest = hashlib.sha256(token.encode()).digest()
    row = {"name": _TOKEN_ROW, "value": digest.hex(), "updated_at": datetime.now(UTC)}
    # Insert only if absent, then read back: replicas starting together agree on one token.
    insert = (postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert)(
        secrets_table
    ).on_conflict_do_nothing(index_elements=["name"])
    async with engine.begin() as conn:
        await conn.execute(insert, [row])
        stored = (
            await conn.execute(
                select(secrets_table.c.value).where(secrets_table.c.name == _TOKEN_ROW)
            )
        ).scalar_one()
    if stored != digest.hex():
        return AdminToken(bytes.fromhex(stored))
    sys.stderr.write(
        f"actiongate: no ACTIONGATE_ADMIN_TOKEN set; generated admin token (shown once): {token}\n"
    )
    return AdminToken(digest)
