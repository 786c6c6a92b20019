"""Tunnels first, then API requests, shared fairly between callers while tunnels stream."""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from collections.abc import Hashable

from ..wire.pipe import TrafficMeter

__all__ = ["FairAdmission", "ANONYMOUS"]

# Every request without a caller (public endpoints) queues under this one key, so strangers
# together get one caller's share, however many addresses they come from.
ANONYMOUS = ("anonymous",)


class FairAdmission:
    """While tunnels stream, API requests are admitted at `[api] rate_while_tunnels_busy` at most:
    Python code gets one core, each request costs tens of microseconds of it, and an unbounded
    API took two thirds of a busy tunnel's throughput (bench/tunnel_under_api_load.py).

    Requests over the rate wait, none is refused, and the slots go round-robin between callers
    with waiting requests: a flood from one caller (or from the anonymous) delays that caller's
    own requests, and everybody else's by at most one slot per flooding caller.
    """

    def __init__(self, meter: TrafficMeter, rate: int):
        self._meter = meter
        self._interval = 1.0 / rate if rate else 0.0
        self._next = 0.0
        self._waiting: OrderedDict[Hashable, deque[asyncio.Future[None]]] = OrderedDict()
        self._timer: asyncio.TimerHandle | None = None

    def admit_now(self, now: float) -> bool:
        """True when a request may go at once (no coroutine, for the common case)."""
        if not self._interval or not self._meter.busy(now):
            return True
        if not self._waiting and now >= self._next:
            self._next = now + self._interval
            return True
        return False

    async def admit(self, caller: Hashable) -> None:
        loop = asyncio.get_running_loop()
        if self.admit_now(loop.time()):
            return
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiting.setdefault(caller, deque()).append(waiter)
        self._schedule(loop)
        await waiter

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._timer is None and self._waiting:
            self._timer = loop.call_at(max(self._next, loop.time()), self._release)

    def _release(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        if not self._meter.busy(now):  # tunnels went quiet: let everyone in
            for queue in self._waiting.values():
                for waiter in queue:
                    _wake(waiter)
            self._waiting.clear()
            return
        if self._admit_next():
            self._next = max(self._next, now) + self._interval
        self._schedule(loop)

    def _admit_next(self) -> bool:
        """Wake the oldest request of the caller whose turn it is; that caller goes last."""
        while self._waiting:
            caller, queue = next(iter(self._waiting.items()))
            waiter = queue.popleft()
            if queue:
                self._waiting.move_to_end(caller)
            else:
                del self._waiting[caller]
            if _wake(waiter):
                return True
        return False


def _wake(waiter: asyncio.Future[None]) -> bool:
    """False when the request gave up waiting (the client hung up)."""
    if waiter.done():
        return False
    waiter.set_result(None)
    return True
