"""Failed-login throttling: per username and per source address, with a sliding window."""

from __future__ import annotations

import time

from rportd.auth.throttle import LoginThrottle


def test_five_failures_lock_the_username_from_any_address() -> None:
    throttle = LoginThrottle(window=60, per_user=5, per_address=20)
    for i in range(5):
        assert throttle.retry_after("bob", f"192.0.2.{i}") == 0
        throttle.failed("bob", f"192.0.2.{i}")
    assert throttle.retry_after("bob", "198.51.100.1") > 0
    assert throttle.retry_after("alice", "198.51.100.1") == 0


def test_many_failures_from_one_address_lock_that_address_for_every_name() -> None:
    throttle = LoginThrottle(window=60, per_user=5, per_address=20)
    for i in range(20):
        throttle.failed(f"user{i}", "203.0.113.9")
    assert throttle.retry_after("someone-new", "203.0.113.9") > 0
    assert throttle.retry_after("someone-new", "203.0.113.10") == 0


def test_success_clears_the_username_and_failures_age_out() -> None:
    throttle = LoginThrottle(window=0.2, per_user=2, per_address=100)
    throttle.failed("carol", "192.0.2.1")
    throttle.succeeded("carol")
    throttle.failed("carol", "192.0.2.1")
    assert throttle.retry_after("carol", "192.0.2.1") == 0
    throttle.failed("carol", "192.0.2.1")
    assert throttle.retry_after("carol", "192.0.2.1") > 0
    deadline = time.monotonic() + 2
    while throttle.retry_after("carol", "192.0.2.1") > 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert throttle.retry_after("carol", "192.0.2.1") == 0
