"""Personal API tokens (`/me/tokens`): scoped, expiring, bound to one account, stored as a hash.

Format: `rpt_<16 hex id>_<43 url-safe secret>`. The prefix never starts a JWT (login tokens are
`eyJ...` with two dots), so the two kinds never confuse each other; the id is the table's primary
key, so an unknown token costs one primary-key lookup and a malformed one none at all.

Only `secret_hash` is stored: SHA-256 over the secret *and* the owner's account generation (the
HMAC tokens.py binds login tokens with: tenant, username, stored password hash). A removed,
re-created or moved user, or a changed password, no longer produces the stored hash, so the token
ends with the account it was made for without any extra column. The secret has 256 bits of
entropy, so a fast hash is enough; it is compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from ..errors import Unauthorized
from ..store import Store
from ..tenancy import exact_equals, same_identity

__all__ = ["PREFIX", "PersonalToken", "PersonalTokens", "is_personal", "MAX_TOKENS_PER_USER",
           "MAX_LIFETIME", "DEFAULT_LIFETIME"]

PREFIX = "rpt_"
_FORMAT = re.compile(r"^rpt_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")
MAX_TOKENS_PER_USER = 50
DEFAULT_LIFETIME = 30 * 24 * 3600
MAX_LIFETIME = 366 * 24 * 3600
_COLUMNS = "id, tenant, username, name, secret_hash, scopes, created_at, expires_at"


def is_personal(token: str) -> bool:
    return token.startswith(PREFIX)


def _now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _digest(secret: str, account: str) -> str:
    material = "\x00".join(("rportd-pat-v1", secret, account)).encode()
    return "sha256:" + hashlib.sha256(material).hexdigest()


@dataclass(frozen=True)
class PersonalToken:
    id: str
    tenant: str
    username: str
    name: str
    scopes: tuple[str, ...]
    created_at: str
    expires_at: str

    def to_json(self) -> dict[str, object]:
        expired = self.expires_at <= iso(_now())
        return {"id": self.id, "name": self.name, "scopes": list(self.scopes),
                "created_at": self.created_at, "expires_at": self.expires_at,
                "expired": expired}


def _token(row: tuple[object, ...]) -> PersonalToken:
    try:
        scopes = json.loads(str(row[5]))
    except ValueError:
        scopes = []
    scopes = [s for s in scopes if isinstance(s, str)] if isinstance(scopes, list) else []
    return PersonalToken(str(row[0]), str(row[1]), str(row[2]), str(row[3]), tuple(scopes),
                         str(row[6]), str(row[7] or ""))


class PersonalTokens:
    """The `api_tokens` table: create, list and revoke an owner's tokens; find one by secret."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._rows: dict[str, tuple[object, ...] | None] = {}
        self._version: int | None = None
        self._eq_tenant = exact_equals(store, "tenant")
        self._eq_username = exact_equals(store, "username")

    async def create(self, tenant: str, username: str, account: str, name: str,
                     scopes: tuple[str, ...], lifetime: int) -> tuple[PersonalToken, str]:
        """The new token and its secret text (shown once, never stored)."""
        token_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
        now = _now()
        token = PersonalToken(token_id, tenant, username, name, scopes, iso(now),
                              iso(now + timedelta(seconds=lifetime)))
        await self._store.execute(
            f"INSERT INTO api_tokens ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (token_id, tenant, username, name, _digest(secret, account),
             json.dumps(list(scopes)), token.created_at, token.expires_at))
        return token, f"{PREFIX}{token_id}_{secret}"

    async def owned(self, tenant: str, username: str) -> list[PersonalToken]:
        rows = await self._store.fetchall(
            f"SELECT {_COLUMNS} FROM api_tokens WHERE tenant = ? AND username = ? "
            "ORDER BY created_at, id", (tenant, username))
        return [_token(r) for r in rows
                if same_identity(r[1], tenant) and same_identity(r[2], username)]

    async def revoke(self, tenant: str, username: str, token_id: str) -> bool:
        """False when the owner has no such token (another's answers the same)."""
        return await self._store.execute(
            f"DELETE FROM api_tokens WHERE id = ? AND {self._eq_tenant} AND "
            f"{self._eq_username}", (token_id, tenant, username)) > 0

    async def revoke_all(self, tenant: str, username: str) -> int:
        return await self._store.execute(
            f"DELETE FROM api_tokens WHERE tenant = ? AND {self._eq_tenant} AND username = ? "
            f"AND {self._eq_username}", (tenant, tenant, username, username))

    async def find(self, text: str) -> tuple[PersonalToken, str, str]:
        """(token, secret, stored hash) for a well-formed, known, unexpired token; Unauthorized
        otherwise. The caller checks the secret against the owner's account (`matches`)."""
        match = _FORMAT.match(text)
        if not match:
            raise Unauthorized("invalid token", code="ERR_CODE_INVALID_TOKEN")
        row = await self._row(match.group(1))
        if row is None or not same_identity(row[0], match.group(1)):
            raise Unauthorized("invalid token", code="ERR_CODE_INVALID_TOKEN")
        token = _token(row)
        return token, match.group(2), str(row[4])

    async def _row(self, token_id: str) -> tuple[object, ...] | None:
        """By primary key; served from memory while the database reports no commit since
        (SQLite's data_version: a revocation, a removed user, any write drops the cache)."""
        version = self._store.data_version()
        if version is None or version != self._version:
            self._rows.clear()
            self._version = version
        elif token_id in self._rows:
            return self._rows[token_id]
        row = await self._store.fetchone(f"SELECT {_COLUMNS} FROM api_tokens WHERE id = ?",
                                         (token_id,))
        if version is not None and len(self._rows) < 10_000:
            self._rows[token_id] = row
        return row

    @staticmethod
    def matches(secret: str, account: str, stored_hash: str) -> bool:
        return hmac.compare_digest(_digest(secret, account).encode(), stored_hash.encode())

    @staticmethod
    def expired(token: PersonalToken) -> bool:
        return not token.expires_at or token.expires_at <= iso(_now())
