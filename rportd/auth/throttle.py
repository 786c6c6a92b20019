"""Failed-login throttling for API and agent logins: count before checking, slow, then ban.

Every distinct guess first *reserves* an attempt on three keys — the identity (username or client
auth id), the source address, and the (identity, address) pair — and only then is the password
checked; the reservation becomes a failure or is released. So concurrent guesses see each other
and at most `max_failed_login` of them reach bcrypt for one pair.

The numbers (defaults; `max_failed_login` and `ban_time` are `[server]` settings, openrport's):
- pair (identity, address): `max_failed_login` (5) failures within `window` (15 min) ban the pair
  for `ban_time` (3600 s). This is the only block an API user can suffer, and only from the
  address that guessed.
- identity alone: after `identity_free` (5) failures from anywhere, each further attempt waits
  0.25 s, doubling per failure, capped at `delay_cap` (2 s) — never a refusal, so a stranger
  can slow a user down but cannot lock them out.
- address alone: on the API, after `address_free` (20) failures the address is slowed the same
  way (NAT: many users share it); on the agent port (`ban_addresses`) `max_failed_login`
  failures ban the address for `ban_time`, as openrport does.
Bearer tokens never pass through here.

Memory is bounded without ever clearing everything: records with one failure live in a "cold"
LRU table; records with more (or in flight, or banned) move to a "hot" table with its own bound.
A spray of new names only evicts other one-failure records.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field

__all__ = ["ThrottlePolicy", "LoginThrottle", "Reservation", "source_key"]

log = logging.getLogger("rportd.auth")


@dataclass(frozen=True)
class ThrottlePolicy:
    max_failed_login: int = 5
    ban_time: float = 3600.0
    window: float = 900.0
    identity_free: int = 5
    address_free: int = 20
    ban_addresses: bool = False
    delay_base: float = 0.25
    delay_cap: float = 2.0
    max_records: int = 100_000


@dataclass
class _Record:
    # Only the newest failures matter (limits and the delay's cap are reached long before 64).
    failures: deque[float] = field(default_factory=lambda: deque(maxlen=64))
    pending: int = 0
    banned_until: float = 0.0

    def count(self, now: float, window: float) -> int:
        """Failures within the window plus attempts in flight."""
        while self.failures and self.failures[0] < now - window:
            self.failures.popleft()
        return len(self.failures) + self.pending

    @property
    def hot(self) -> bool:
        return len(self.failures) > 1 or self.pending > 0 or self.banned_until > 0


Key = tuple[str, ...]


@dataclass(frozen=True)
class Reservation:
    """One attempt counted on its keys; settle it exactly once. `delay` is how long it waits."""

    keys: tuple[Key, Key, Key]
    delay: float


class _Records:
    """Two LRU tables (see the module docstring); eviction takes the oldest, never everything."""

    def __init__(self, bound: int):
        self._bound = bound
        self._cold: OrderedDict[Key, _Record] = OrderedDict()
        self._hot: OrderedDict[Key, _Record] = OrderedDict()

    def __len__(self) -> int:
        return len(self._cold) + len(self._hot)

    def peek(self, key: Key) -> _Record | None:
        return self._hot.get(key) or self._cold.get(key)

    def get(self, key: Key) -> _Record:
        record = self._hot.pop(key, None) or self._cold.pop(key, None) or _Record()
        self._place(key, record)
        return record

    def touch(self, key: Key) -> None:
        """Re-file a record after it changed (it may have become hot or cold)."""
        record = self._hot.pop(key, None) or self._cold.pop(key, None)
        if record is not None and (record.failures or record.pending or record.banned_until):
            self._place(key, record)

    def _place(self, key: Key, record: _Record) -> None:
        table = self._hot if record.hot else self._cold
        table[key] = record
        while len(table) > self._bound:
            old_key, old = table.popitem(last=False)
            if old.pending:  # in flight: keep it, evict the next oldest instead
                table[old_key] = old
                if all(r.pending for r in table.values()):
                    break


@functools.lru_cache(maxsize=65536)
def source_key(address: str) -> str:
    """What the per-address cap counts: the IPv4 address, or the IPv6 /64 it belongs to."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class LoginThrottle:
    """Per identity, per address and per pair; see the module docstring for the rules."""

    def __init__(self, policy: ThrottlePolicy | None = None):
        self.policy = policy or ThrottlePolicy()
        self._records = _Records(self.policy.max_records)

    def __len__(self) -> int:
        return len(self._records)

    @staticmethod
    def _keys(identity: str, address: str) -> tuple[Key, Key, Key]:
        """An IPv6 source counts as its /64, as admission does: one host owns a whole /64 and
        could otherwise rotate addresses past every ban."""
        source = source_key(address)
        return ("id", identity), ("addr", source), ("pair", identity, source)

    def retry_after(self, identity: str, address: str) -> float:
        """Seconds until this pair (or, on the agent port, this address) may try again; 0: now."""
        now = time.monotonic()
        identity_key, address_key, pair_key = self._keys(identity, address)
        blocking = [pair_key, address_key] if self.policy.ban_addresses else [pair_key]
        waits = [self._ban_left(key, now) for key in blocking]
        return max(waits)

    def _ban_left(self, key: Key, now: float) -> float:
        """Seconds of ban left on key; attempts in flight that fill the limit refuse too."""
        record = self._records.peek(key)
        if record is None:
            return 0.0
        if record.banned_until > now:
            return record.banned_until - now
        record.banned_until = 0.0
        if record.count(now, self.policy.window) >= self.policy.max_failed_login:
            return 1.0  # the attempts in flight decide: a ban, or a success that clears it
        return 0.0

    def reserve(self, identity: str, address: str) -> Reservation | float:
        """Count one attempt before checking it; a float (seconds to wait) means refused."""
        wait = self.retry_after(identity, address)
        if wait > 0:
            return wait
        now = time.monotonic()
        keys = self._keys(identity, address)
        counts = []
        for key in keys:
            record = self._records.get(key)
            counts.append(record.count(now, self.policy.window))
            record.pending += 1
            self._records.touch(key)
        return Reservation(keys, self._delay(counts[0], counts[1]))

    def _delay(self, identity_count: int, address_count: int) -> float:
        """The slow-down for an attempt that comes after `count` failures (and ones in flight)."""
        policy = self.policy
        over = identity_count - policy.identity_free
        if not policy.ban_addresses:
            over = max(over, address_count - policy.address_free)
        if over < 0:
            return 0.0
        return min(policy.delay_cap, policy.delay_base * 2.0 ** over)

    def settle(self, reservation: Reservation, ok: bool) -> None:
        """The attempt's outcome: a success clears its pair; a failure is counted (and may ban)."""
        now = time.monotonic()
        identity_key, address_key, pair_key = reservation.keys
        for key in reservation.keys:
            record = self._records.get(key)
            record.pending = max(0, record.pending - 1)
            if not ok:
                record.failures.append(now)
                self._maybe_ban(key, record, now)
            self._records.touch(key)
        if ok:
            self._clear(pair_key)

    def succeeded(self, identity: str, address: str) -> None:
        """A login that needed no check (a cached match) still clears its pair's failures."""
        self._clear(self._keys(identity, address)[2])

    def release(self, reservation: Reservation) -> None:
        """An attempt that was never checked (the pool was full): uncount it."""
        for key in reservation.keys:
            record = self._records.get(key)
            record.pending = max(0, record.pending - 1)
            self._records.touch(key)

    def _maybe_ban(self, key: Key, record: _Record, now: float) -> None:
        if key[0] == "id" or (key[0] == "addr" and not self.policy.ban_addresses):
            return
        if record.count(now, self.policy.window) - record.pending >= \
                self.policy.max_failed_login and record.banned_until <= now:
            record.banned_until = now + self.policy.ban_time
            record.failures.clear()
            what = "address" if key[0] == "addr" else "user/address pair"
            log.info("maximum of %d failed logins reached: %s %s banned for %.0fs",
                     self.policy.max_failed_login, what, " ".join(map(repr, key[1:])),
                     self.policy.ban_time)

    def _clear(self, key: Key) -> None:
        record = self._records.peek(key)
        if record is not None:
            record.failures.clear()
            record.banned_until = 0.0
            self._records.touch(key)

    def banned(self, identity: str, address: str) -> bool:
        return self.retry_after(identity, address) > 0

    def address_banned(self, address: str) -> bool:
        """Whether `address` itself is banned (agent port): its connections can be dropped at
        accept, before rportd spends a key exchange on them."""
        if not self.policy.ban_addresses:
            return False
        record = self._records.peek(("addr", source_key(address)))
        return record is not None and record.banned_until > time.monotonic()
