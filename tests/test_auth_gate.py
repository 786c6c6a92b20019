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


async def _seconds(login: LoginGate, identity: str, password: str, stored: str | None) -> float:
    started = time.monotonic()
    assert not await login.check(identity, f"192.0.2.{len(identity)}", password, stored)
    return time.monotonic() - started


async def test_a_mixed_table_tells_nothing_through_timing() -> None:
    """rport-era plaintext rows beside API-made bcrypt rows: after a plaintext row was checked,
    an unknown id and a plaintext row's wrong password still cost what a bcrypt row's does."""
    login = gate()
    try:
        hashed = await asyncio.to_thread(hash_password, "right-pw", 10)
        await _seconds(login, "bcrypt-row", "wrong", hashed)  # the cost is learned
        bcrypt_row = await _seconds(login, "bcrypt-row2", "wrong", hashed)
        await _seconds(login, "plain-row", "wrong", "plain-secret")  # a plaintext row now
        unknown = await _seconds(login, "no-such-id", "wrong", None)
        plaintext = await _seconds(login, "plain-row2", "wrong", "plain-secret")
        assert unknown > bcrypt_row / 2 and plaintext > bcrypt_row / 2, (bcrypt_row, unknown,
                                                                          plaintext)
    finally:
        login.close()


async def test_a_single_plaintext_credential_costs_no_bcrypt() -> None:
    login = gate()
    try:
        login.plaintext_only()
        assert await _seconds(login, "nobody", "wrong", None) < 0.05
    finally:
        login.close()
