"""Password checks: plaintext (constant time) or bcrypt ($2a$ $2b$ $2y$), never on the event loop.

bcrypt costs ~0.2 s at cost 12, so verified results are cached. The cache key holds the stored
hash and a digest of the offered password, so a changed password or record misses at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
from collections import OrderedDict

from passlib.hash import bcrypt as _bcrypt

__all__ = ["is_bcrypt", "hash_password", "VerifyCache", "random_password"]

_BCRYPT_PREFIXES = ("$2a$", "$2b$", "$2y$")


def is_bcrypt(stored: str) -> bool:
    return stored.startswith(_BCRYPT_PREFIXES)


def random_password(nbytes: int = 18) -> str:
    return secrets.token_urlsafe(nbytes)


def hash_password(password: str, rounds: int = 12) -> str:
    """bcrypt hash; blocking — call through asyncio.to_thread on a running loop."""
    return str(_bcrypt.using(rounds=rounds, ident="2b").hash(password))


def _verify_blocking(password: str, stored: str) -> bool:
    if is_bcrypt(stored):
        try:
            return bool(_bcrypt.verify(password, stored))
        except ValueError:
            return False
    return hmac.compare_digest(password.encode(), stored.encode())


class VerifyCache:
    """Remembers successful bcrypt checks, keyed by (stored hash, sha256(password))."""

    def __init__(self, size: int = 65536):
        self._size = size
        self._ok: OrderedDict[tuple[str, bytes], None] = OrderedDict()
        # The secret keeps the digests useless to anyone reading memory dumps of other processes.
        self._pepper = secrets.token_bytes(16)

    def _key(self, password: str, stored: str) -> tuple[str, bytes]:
        digest = hashlib.sha256(self._pepper + password.encode()).digest()
        return stored, digest

    async def verify(self, password: str, stored: str) -> bool:
        if not is_bcrypt(stored):
            return _verify_blocking(password, stored)
        key = self._key(password, stored)
        if key in self._ok:
            self._ok.move_to_end(key)
            return True
        ok = await asyncio.to_thread(_verify_blocking, password, stored)
        if ok:
            self._ok[key] = None
            if len(self._ok) > self._size:
                self._ok.popitem(last=False)
        return ok

