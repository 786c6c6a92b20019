"""API tokens: HS256 JWTs bound to one account, with an expiry and an id DELETE /login revokes.

A token names the username *and* carries `acc`, an HMAC (with the server secret) over the
account's tenant, username and stored password hash. A re-created username (new hash, maybe another
tenant) or a changed or removed password no longer matches, so the token dies with the account
generation it was issued for — no schema change, and nothing secret inside the token.

Written by hand (about forty lines) rather than adding a JWT library: we need one algorithm,
and pinning it here rules out the classic "alg: none" and key-confusion mistakes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from ..config import MIN_SECRET_BYTES
from ..errors import ConfigError, Unauthorized
from ..store import Store

__all__ = ["TokenIssuer", "TokenClaims", "load_or_create_secret", "stored_secret", "secret_id",
           "DEFAULT_LIFETIME",
           "MAX_LIFETIME"]

DEFAULT_LIFETIME = 600
MAX_LIFETIME = 90 * 24 * 3600
_HEADER = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _unb64(data: str) -> bytes:
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))


@dataclass(frozen=True)
class TokenClaims:
    username: str
    jti: str
    expires: int
    account: str = ""


class TokenIssuer:
    def __init__(self, secret: bytes, store: Store):
        if len(secret) < MIN_SECRET_BYTES:
            raise ConfigError("[api] jwt_secret", f"must be at least {MIN_SECRET_BYTES} bytes")
        self._secret = secret
        self._store = store
        self._revoked: dict[str, int] = {}  # jti -> expiry (unix seconds)

    async def load_revocations(self) -> None:
        rows = await self._store.fetchall(
            "SELECT jti, expires FROM api_token_revocations WHERE expires > ?",
            (int(time.time()),))
        self._revoked = {str(row[0]): int(row[1]) for row in rows}

    def account(self, tenant: str, username: str, stored_password: str) -> str:
        """The account generation a token is bound to (see the module docstring)."""
        material = "\x00".join(("rportd-account-v1", tenant, username, stored_password))
        digest = hmac.new(self._secret, material.encode("utf-8", "surrogatepass"),
                          hashlib.sha256).digest()
        return _b64(digest[:18]).decode()

    def bound_to(self, claims: TokenClaims, tenant: str, username: str,
                 stored_password: str) -> bool:
        """Whether the token was issued to this very account generation."""
        expected = self.account(tenant, username, stored_password)
        return claims.username == username and hmac.compare_digest(expected, claims.account)

    def issue(self, username: str, lifetime: int, account: str = "") -> str:
        now = int(time.time())
        claims = {"sub": username, "acc": account, "jti": secrets.token_hex(12), "iat": now,
                  "exp": now + lifetime}
        body = _b64(json.dumps(claims, separators=(",", ":")).encode())
        signing_input = _HEADER + b"." + body
        signature = _b64(hmac.new(self._secret, signing_input, hashlib.sha256).digest())
        return (signing_input + b"." + signature).decode()

    def verify(self, token: str) -> TokenClaims:
        """Signature, expiry and revocation; the caller then checks the user still exists."""
        try:
            header, body, signature = token.split(".")
            expected = _b64(hmac.new(self._secret, f"{header}.{body}".encode(),
                                     hashlib.sha256).digest())
            if header.encode() != _HEADER or not hmac.compare_digest(expected, signature.encode()):
                raise ValueError("bad signature")
            claims = json.loads(_unb64(body))
            result = TokenClaims(str(claims["sub"]), str(claims["jti"]), int(claims["exp"]),
                                 str(claims.get("acc", "")))
        except (ValueError, KeyError, TypeError):
            raise Unauthorized("invalid token", code="ERR_CODE_INVALID_TOKEN") from None
        if result.expires <= time.time():
            raise Unauthorized("token expired", code="ERR_CODE_TOKEN_EXPIRED")
        if result.jti in self._revoked:
            raise Unauthorized("token revoked", code="ERR_CODE_TOKEN_REVOKED")
        return result

    async def revoke(self, claims: TokenClaims) -> None:
        self._revoked[claims.jti] = claims.expires
        await self._store.execute("INSERT INTO api_token_revocations (jti, expires) VALUES (?, ?)",
                                  (claims.jti, claims.expires))

    @property
    def revocations(self) -> int:
        return len(self._revoked)

    async def prune(self) -> int:
        """Forget revocations of tokens that have expired anyway (memory and table); the count
        removed from memory. Run periodically by the Runtime."""
        now = int(time.time())
        expired = [jti for jti, expires in self._revoked.items() if expires <= now]
        for jti in expired:
            del self._revoked[jti]
        await self._store.execute("DELETE FROM api_token_revocations WHERE expires <= ?", (now,))
        return len(expired)


def stored_secret(configured: str, data_dir: Path) -> bytes | None:
    """The secret `load_or_create_secret` would use, without creating one (None: none yet)."""
    if configured:
        return configured.encode()
    path = data_dir / "jwt_secret"
    return path.read_bytes().strip() if path.exists() else None


def secret_id(secret: bytes) -> str:
    """Names a secret without revealing it (an HMAC keyed by it): tenant archives carry it, so
    an import can tell whether the target's secret is the one personal tokens are bound to."""
    return hmac.new(secret, b"rportd-jwt-secret-id-v1", hashlib.sha256).hexdigest()[:32]


def load_or_create_secret(configured: str, data_dir: Path) -> bytes:
    """`jwt_secret` if set; else a random secret kept (0600) in data_dir so tokens survive a
    restart."""
    if configured:
        return configured.encode()
    path = data_dir / "jwt_secret"
    if path.exists():
        secret = path.read_bytes().strip()
        if len(secret) < MIN_SECRET_BYTES:
            raise ConfigError("[api] jwt_secret",
                              f"unset, and the generated {str(path)!r} holds fewer than "
                              f"{MIN_SECRET_BYTES} bytes; delete it to have a new one generated, "
                              "or set jwt_secret")
        return secret
    secret = secrets.token_hex(32).encode()
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(secret)
    os.replace(tmp, path)
    return secret
