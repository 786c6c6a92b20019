"""The login gate: one bcrypt per distinct guess in flight, so a browser's parallel requests with
the right password neither cost twenty checks nor trip the throttle."""

from __future__ import annotations

import asyncio
import time

from rportd.auth.gate import LoginGate
from rportd.auth.passwords import PasswordPool, hash_password
from rportd.auth.throttle import ThrottlePolicy


def gate() -> LoginGate:
    return LoginGate("test", ThrottlePolicy(max_failed_login=5), PasswordPool("test", workers=1))


async def test_twenty_parallel_identical_logins_cost_one_bcrypt() -> None:
    login = gate()
    try:
        stored = await asyncio.to_thread(hash_password, "right-pw", 10)
        other = await asyncio.to_thread(hash_password, "other", 10)
        started = time.monotonic()
        assert await login.check("bea", "192.0.2.1", "other", other)
        one = time.monotonic() - started
        started = time.monotonic()
        results = await asyncio.gather(*(login.check("ann", "192.0.2.1", "right-pw", stored)
                                         for _ in range(20)))
        assert all(results)
        assert time.monotonic() - started < 5 * one  # not 20 checks on one worker
    finally:
        login.close()


async def test_twenty_parallel_identical_wrong_guesses_count_once() -> None:
    login = gate()
    try:
        stored = await asyncio.to_thread(hash_password, "right-pw", 4)
        results = await asyncio.gather(*(login.check("ann", "192.0.2.1", "typo", stored)
                                         for _ in range(20)))
        assert not any(results)
        assert login.throttle.retry_after("ann", "192.0.2.1") == 0  # one failure, not twenty
        assert await login.check("ann", "192.0.2.1", "right-pw", stored)
    finally:
        login.close()
