"""The one way a password login is checked, for agents and API users alike: throttle, single
flight, a dummy bcrypt for unknown names, the verify cache, and the port's own password pool."""

from __future__ import annotations

import asyncio
import logging

from ..errors import RportdError
from .passwords import DummyHashes, PasswordPool, PoolBusy, VerifyCache, bcrypt_cost, is_bcrypt
from .throttle import LoginThrottle, Reservation, ThrottlePolicy

__all__ = ["LoginGate", "LoginRefused"]

log = logging.getLogger("rportd.auth")
_DEFAULT_COST = 12
Flight = tuple[str, str, bytes]


class LoginRefused(RportdError):
    """Too many failed logins for this (identity, address); the password was not checked."""

    status = 429
    code = "ERR_CODE_TOO_MANY_REQUESTS"
    title = "Too many failed logins"

    def __init__(self, retry_after: float):
        super().__init__(f"too many failed logins; retry in {max(1, round(retry_after))}s")
        self.retry_after = retry_after


class LoginGate:
    """`check` answers whether a password matches, after the throttle allowed the attempt."""

    def __init__(self, name: str, policy: ThrottlePolicy | None = None,
                 pool: PasswordPool | None = None):
        self.name = name
        self.throttle = LoginThrottle(policy)
        self.pool = pool or PasswordPool(name)
        self.cache = VerifyCache()
        self._dummies = DummyHashes(self.pool)
        self._flights: dict[Flight, asyncio.Future[bool | None]] = {}
        self._seen_cost: int | None = None  # the highest bcrypt cost among rows checked
        self._plaintext_only = False
        self._typical: float | None = None  # seconds a dummy check takes (moving average)

    def learn(self, stored: str) -> None:
        """Remember the highest bcrypt cost this source uses (it never goes down). Unknown
        names cost a dummy bcrypt of it, and every other check that is not a cache hit is
        padded to what that dummy takes: a mixed table (rport-era plaintext rows, cheaper or
        dearer bcrypt rows) tells nothing through timing."""
        cost = bcrypt_cost(stored) if is_bcrypt(stored) else None
        if cost is not None:
            self._seen_cost = max(self._seen_cost or 0, cost)

    def plaintext_only(self) -> None:
        """A source that can hold nothing but one plaintext password (`auth = "id:password"`):
        no check costs a bcrypt."""
        self._plaintext_only = True

    async def check(self, identity: str, address: str, password: str,
                    stored: str | None) -> bool:
        """True when `password` matches `stored`; False when it does not or the name is unknown
        (`stored` None). Raises LoginRefused (throttled) or PoolBusy (queue full)."""
        wait = self.throttle.retry_after(identity, address)
        if wait > 0:
            raise LoginRefused(wait)
        if stored is not None:
            self.learn(stored)
            if self.cache.hit(password, stored):
                self.throttle.succeeded(identity, address)
                return True
        flight = (identity, stored or "", self.cache.digest(password))
        if flight in self._flights:  # the same guess already in progress: no second bcrypt
            return await self._join(self._flights[flight])
        return await self._fly(flight, identity, address, password, stored)

    @staticmethod
    async def _join(future: asyncio.Future[bool | None]) -> bool:
        result = await asyncio.shield(future)
        if result is None:
            raise LoginRefused(1.0)
        return result

    async def _fly(self, flight: Flight, identity: str, address: str, password: str,
                   stored: str | None) -> bool:
        reservation = self.throttle.reserve(identity, address)
        if not isinstance(reservation, Reservation):
            raise LoginRefused(reservation)
        future: asyncio.Future[bool | None] = asyncio.get_running_loop().create_future()
        self._flights[flight] = future
        ok: bool | None = None
        counted = True
        try:
            ok = await self._verify(reservation.delay, password, stored)
        except PoolBusy:
            counted = False  # not checked, so not a failure
            raise
        finally:
            del self._flights[flight]
            future.set_result(ok)
            if counted:
                self.throttle.settle(reservation, bool(ok))
            else:
                self.throttle.release(reservation)
        if ok and stored is not None:
            self.cache.remember(password, stored)
        return bool(ok)

    async def _verify(self, delay: float, password: str, stored: str | None) -> bool:
        if delay > 0:
            await asyncio.sleep(delay)
        if stored is None:
            await self._dummy_check(password)
            return False
        if self._typical is None and not self._plaintext_only:
            await self._dummy_check(password)  # once: learn what a check should take
        started = asyncio.get_running_loop().time()
        ok = await self.pool.verify(password, stored)
        await self._pad(started)
        return ok

    async def _dummy_check(self, password: str) -> None:
        """Spend what a bcrypt check would (nothing for a plaintext-only source)."""
        if self._plaintext_only:
            return
        loop = asyncio.get_running_loop()
        cost = self._seen_cost or _DEFAULT_COST  # before any row: what rportd writes
        dummy = await self._dummies.for_cost(cost)
        started = loop.time()
        await self.pool.verify(password, dummy)
        took = loop.time() - started
        self._typical = took if self._typical is None else 0.8 * self._typical + 0.2 * took

    async def _pad(self, started: float) -> None:
        """Sleep until a check begun at `started` took as long as a dummy check does."""
        if self._typical is not None and not self._plaintext_only:
            rest = self._typical - (asyncio.get_running_loop().time() - started)
            if rest > 0:
                await asyncio.sleep(rest)

    def close(self) -> None:
        self.pool.close()

