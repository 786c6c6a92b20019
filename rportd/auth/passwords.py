"""Password checks: plaintext (constant time) or bcrypt ($2a$ $2b$ $2y$), on bounded thread pools.

bcrypt costs ~0.2 s at cost 12, so verified results are cached. The cache key holds the stored
hash and a digest of the offered password, so a changed password or record misses at once.
Agent logins and API logins each get a `PasswordPool` of their own (a few threads, a bounded
queue): guessers on one port cannot starve the other, and a full queue refuses instead of piling up.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import re
import secrets
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from passlib.hash import bcrypt as _bcrypt

from ..errors import BadRequest, RportdError

__all__ = ["is_bcrypt", "hash_password", "VerifyCache", "random_password", "PasswordPool",
           "PoolBusy", "DummyHashes", "bcrypt_cost", "check_new_password", "MAX_PASSWORD_BYTES",
           "bcrypt_input"]

_BCRYPT_PREFIXES = ("$2a$", "$2b$", "$2y$")
_COST = re.compile(r"^\$2[aby]\$(\d\d)\$")
MAX_PASSWORD_BYTES = 72  # bcrypt ignores (bcrypt 5 refuses) anything longer
_PREHASH = "rportd-sha256:"
T = TypeVar("T")


def is_bcrypt(stored: str) -> bool:
    return stored.startswith(_BCRYPT_PREFIXES)


def bcrypt_cost(stored: str) -> int | None:
    match = _COST.match(stored)
    return int(match.group(1)) if match else None


def random_password(nbytes: int = 18) -> str:
    return secrets.token_urlsafe(nbytes)


def check_new_password(password: str) -> None:
    """Text we can store: BadRequest for lone surrogates (JSON allows them, UTF-8 does not)."""
    try:
        password.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest("password must be valid Unicode text") from None


def bcrypt_input(password: str) -> str:
    """What bcrypt sees. bcrypt drops bytes after 72 and cannot hold NUL, so either would
    silently mean another password; such passwords are pre-hashed (SHA-256, base64) into 58
    ASCII bytes, at hashing and at every check alike. Passwords of up to 72 bytes without NUL,
    all that rport's bcrypt hashes can hold, are used as they are."""
    raw = password.encode("utf-8", "surrogatepass")
    if len(raw) <= MAX_PASSWORD_BYTES and b"\x00" not in raw:
        return password
    return _PREHASH + base64.b64encode(hashlib.sha256(raw).digest()).decode()


def hash_password(password: str, rounds: int = 12) -> str:
    """bcrypt hash; blocking — call through a PasswordPool (or asyncio.to_thread)."""
    return str(_bcrypt.using(rounds=rounds, ident="2b").hash(bcrypt_input(password)))


def _verify_blocking(password: str, stored: str) -> bool:
    if is_bcrypt(stored):
        try:
            return bool(_bcrypt.verify(bcrypt_input(password), stored))
        except ValueError:  # over 72 bytes, a NUL, a malformed hash: never a match
            return False
    return hmac.compare_digest(password.encode("utf-8", "surrogatepass"),
                               stored.encode("utf-8", "surrogatepass"))


class PoolBusy(RportdError):
    """The password pool's queue is full: refuse the login rather than queue without bound."""

    status = 503
    code = "ERR_CODE_LOGIN_BUSY"
    title = "Too many logins in progress"


class PasswordPool:
    """A few threads for bcrypt, with at most `queue` checks waiting or running."""

    def __init__(self, name: str, workers: int | None = None, queue: int = 64):
        self.workers = workers or max(1, (os.cpu_count() or 2) // 2)
        self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix=f"bcrypt-{name}")
        self._limit = queue
        self._busy = 0

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        if self._busy >= self._limit:
            raise PoolBusy("too many logins are being checked; try again shortly")
        self._busy += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        finally:
            self._busy -= 1

    async def verify(self, password: str, stored: str) -> bool:
        if not is_bcrypt(stored):
            return _verify_blocking(password, stored)
        return await self.run(_verify_blocking, password, stored)

    async def hash(self, password: str, rounds: int = 12) -> str:
        return await self.run(hash_password, password, rounds)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class DummyHashes:
    """bcrypt hashes of a random password, one per cost, for names that do not exist: checking
    one costs what checking a real user's hash costs, so latency tells nothing."""

    def __init__(self, pool: PasswordPool):
        self._pool = pool
        self._hashes: dict[int, str] = {}
        self._secret = random_password()

    async def for_cost(self, cost: int) -> str:
        if cost not in self._hashes:
            self._hashes[cost] = await self._pool.hash(self._secret, cost)
        return self._hashes[cost]


class VerifyCache:
    """Remembers successful bcrypt checks, keyed by (stored hash, sha256(password))."""

    def __init__(self, size: int = 65536):
        self._size = size
        self._ok: OrderedDict[tuple[str, bytes], None] = OrderedDict()
        # The secret keeps the digests useless to anyone reading memory dumps of other processes.
        self._pepper = secrets.token_bytes(16)

    def digest(self, password: str) -> bytes:
        return hashlib.sha256(self._pepper + password.encode("utf-8", "surrogatepass")).digest()

    def hit(self, password: str, stored: str) -> bool:
        key = (stored, self.digest(password))
        if key in self._ok:
            self._ok.move_to_end(key)
            return True
        return False

    def remember(self, password: str, stored: str) -> None:
        self._ok[(stored, self.digest(password))] = None
        if len(self._ok) > self._size:
            self._ok.popitem(last=False)

    async def verify(self, password: str, stored: str) -> bool:
        """Check through the default executor (tests, tools); logins go through a LoginGate."""
        if not is_bcrypt(stored):
            return _verify_blocking(password, stored)
        if self.hit(password, stored):
            return True
        ok = await asyncio.to_thread(_verify_blocking, password, stored)
        if ok:
            self.remember(password, stored)
        return ok
