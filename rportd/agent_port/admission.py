"""Who may occupy the agent port before logging in, and for how long.

Connections not yet authenticated are capped globally and per source (an IPv4 address, or an IPv6
/64: one host usually owns a whole /64). The CPU-heavy key exchange runs in a bounded number of
slots; connections waiting for one are capped too, and wait at most a deadline. A stranger can
hold at most `max_unauthenticated_per_address` connections, each for at most the upgrade, slot,
handshake and login deadlines (agent_port/listener.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from ..auth.throttle import source_key

__all__ = ["Limits", "Admission", "Busy"]


@dataclass(frozen=True)
class Limits:
    upgrade_timeout: float
    handshake_timeout: float
    login_timeout: float
    handshake_slots: int
    max_waiting: int
    max_unauthenticated: int
    max_unauthenticated_per_address: int


class Busy(Exception):
    """No room: too many connections waiting for a handshake slot, or none freed in time."""


class Admission:
    """Counters and the handshake slots of one agent port."""

    def __init__(self, limits: Limits):
        self.limits = limits
        self.unauthenticated = 0
        self._per_source: dict[str, int] = {}
        self._slots = asyncio.Semaphore(limits.handshake_slots)
        self._source_slots: dict[str, tuple[asyncio.Semaphore, int]] = {}
        self.waiting = 0

    def admit(self, address: str) -> bool:
        """Count a new connection from `address`; False (nothing counted) when over a cap."""
        key = source_key(address)
        if (self.unauthenticated >= self.limits.max_unauthenticated
                or self._per_source.get(key, 0) >= self.limits.max_unauthenticated_per_address):
            return False
        self.unauthenticated += 1
        self._per_source[key] = self._per_source.get(key, 0) + 1
        return True

    def source_full(self, address: str) -> bool:
        """Whether `address`'s source already holds its share of unauthenticated places."""
        count = self._per_source.get(source_key(address), 0)
        return count >= self.limits.max_unauthenticated_per_address

    def release(self, address: str) -> None:
        """The connection logged in or went away: it no longer counts against the caps."""
        key = source_key(address)
        self.unauthenticated -= 1
        left = self._per_source.get(key, 1) - 1
        if left > 0:
            self._per_source[key] = left
        else:
            self._per_source.pop(key, None)

    @asynccontextmanager
    async def handshake_slot(self, address: str) -> AsyncIterator[None]:
        """Hold one of the key-exchange slots, and one of its source's (a quarter of them, so
        one source cannot take them all); Busy when the queue is full or the wait too long."""
        if self.waiting >= self.limits.max_waiting:
            raise Busy("too many connections waiting for a handshake slot")
        key = source_key(address)
        source = self._source_semaphore(key, +1)
        self.waiting += 1
        try:
            await asyncio.wait_for(self._acquire(source), self.limits.upgrade_timeout)
        except TimeoutError:
            self._source_semaphore(key, -1)
            raise Busy("no handshake slot became free in time") from None
        finally:
            self.waiting -= 1
        try:
            yield
        finally:
            self._slots.release()
            source.release()
            self._source_semaphore(key, -1)

    async def _acquire(self, source: asyncio.Semaphore) -> None:
        await source.acquire()
        try:
            await self._slots.acquire()
        except BaseException:
            source.release()
            raise

    def _source_semaphore(self, key: str, change: int) -> asyncio.Semaphore:
        """The per-source semaphore, created on first use and dropped when nobody uses it."""
        semaphore, users = self._source_slots.get(key) or (
            asyncio.Semaphore(max(1, self.limits.handshake_slots // 4)), 0)
        users += change
        if users > 0:
            self._source_slots[key] = (semaphore, users)
        else:
            self._source_slots.pop(key, None)
        return semaphore
