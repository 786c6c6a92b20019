"""The login throttle's rules: count before checking, ban pairs (and agent addresses), only slow
identities, bounded memory that a spray of names cannot clear."""

from __future__ import annotations

import time

from rportd.auth.throttle import LoginThrottle, Reservation, ThrottlePolicy


def fail(throttle: LoginThrottle, identity: str, address: str) -> None:
    reservation = throttle.reserve(identity, address)
    assert isinstance(reservation, Reservation), reservation
    throttle.settle(reservation, False)


def test_concurrent_reservations_count_before_any_check() -> None:
    throttle = LoginThrottle(ThrottlePolicy(max_failed_login=5))
    taken = [throttle.reserve("admin", "192.0.2.1") for _ in range(40)]
    assert sum(isinstance(r, Reservation) for r in taken) == 5  # the rest refused up front


def test_pair_is_banned_but_the_user_is_only_slowed_elsewhere() -> None:
    throttle = LoginThrottle(ThrottlePolicy(max_failed_login=5, ban_time=60))
    for _ in range(5):
        fail(throttle, "bob", "192.0.2.1")
    assert throttle.retry_after("bob", "192.0.2.1") > 59
    elsewhere = throttle.reserve("bob", "198.51.100.7")
    assert isinstance(elsewhere, Reservation) and 0 < elsewhere.delay <= 2.0
    assert throttle.retry_after("alice", "192.0.2.1") == 0


def test_identity_delay_is_capped_however_many_addresses_guess() -> None:
    throttle = LoginThrottle(ThrottlePolicy(max_failed_login=5))
    for i in range(200):
        fail(throttle, "bob", f"10.0.{i // 250}.{i % 250}")
    owner = throttle.reserve("bob", "203.0.113.5")
    assert isinstance(owner, Reservation) and owner.delay == 2.0


def test_twenty_failures_from_one_api_address_lock_nobody_else_out() -> None:
    throttle = LoginThrottle(ThrottlePolicy(max_failed_login=5, address_free=20))
    for i in range(20):
        fail(throttle, f"user{i}", "203.0.113.9")
    neighbour = throttle.reserve("carol", "203.0.113.9")
    assert isinstance(neighbour, Reservation) and neighbour.delay <= 2.0


def test_agent_port_bans_the_address_for_every_id() -> None:
    throttle = LoginThrottle(ThrottlePolicy(max_failed_login=5, ban_time=60, ban_addresses=True))
    for i in range(5):
        fail(throttle, f"id{i}", "127.0.0.2")
    assert throttle.retry_after("anything", "127.0.0.2") > 59
    assert throttle.retry_after("anything", "127.0.0.1") == 0


def test_an_ipv6_host_cannot_rotate_addresses_past_the_bans() -> None:
    """One host owns a /64: failures from many of its addresses ban the /64 (agent port) and
    the pair with any of them (API), as admission counts it."""
    agent = LoginThrottle(ThrottlePolicy(max_failed_login=5, ban_time=60, ban_addresses=True))
    api = LoginThrottle(ThrottlePolicy(max_failed_login=5, ban_time=60))
    for i in range(5):
        fail(agent, f"id{i}", f"2001:db8::{i:x}")
        fail(api, "victim", f"2001:db8::{i:x}")
    assert agent.address_banned("2001:db8::ffff:1") and agent.retry_after("x", "2001:db8::99") > 59
    assert api.retry_after("victim", "2001:db8::beef") > 59
    assert not agent.address_banned("2001:db8:0:1::1")  # the next /64 is another host
    assert api.retry_after("victim", "2001:db8:0:1::1") == 0


def test_success_clears_the_pair_and_bans_expire() -> None:
    throttle = LoginThrottle(ThrottlePolicy(max_failed_login=2, ban_time=0.2))
    fail(throttle, "carol", "192.0.2.1")
    ok = throttle.reserve("carol", "192.0.2.1")
    assert isinstance(ok, Reservation)
    throttle.settle(ok, True)
    fail(throttle, "carol", "192.0.2.1")
    assert throttle.retry_after("carol", "192.0.2.1") == 0
    fail(throttle, "carol", "192.0.2.1")
    assert throttle.retry_after("carol", "192.0.2.1") > 0
    deadline = time.monotonic() + 2
    while throttle.retry_after("carol", "192.0.2.1") > 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert throttle.retry_after("carol", "192.0.2.1") == 0


def test_a_spray_of_100000_names_does_not_clear_an_attacked_name() -> None:
    throttle = LoginThrottle(ThrottlePolicy(max_failed_login=5, max_records=50_000))
    for _ in range(5):
        fail(throttle, "admin", "192.0.2.66")
    for i in range(100_000):
        fail(throttle, f"spray{i}", f"2001:db8::{i:x}")
    assert throttle.retry_after("admin", "192.0.2.66") > 0
    attacked = throttle.reserve("admin", "198.51.100.1")
    assert isinstance(attacked, Reservation) and attacked.delay > 0  # its count survived
    assert len(throttle) <= 2 * 50_000  # bounded: the oldest cold records were evicted
