"""Failed-login throttling, per username and per source address.

After 5 failures for one username, or 20 from one address, within 5 minutes, further attempts
for that key are refused with 429 without checking the password (so a guesser cannot even make
rportd spend bcrypt time) until the oldest failure leaves the window. A success clears the
username's record.
"""

from __future__ import annotations

import time
from collections import deque

__all__ = ["LoginThrottle"]

WINDOW = 300.0
MAX_PER_USER = 5
MAX_PER_ADDRESS = 20


class LoginThrottle:
    def __init__(self, window: float = WINDOW, per_user: int = MAX_PER_USER,
                 per_address: int = MAX_PER_ADDRESS):
        self._window = window
        self._limits = {"user": per_user, "address": per_address}
        self._failures: dict[tuple[str, str], deque[float]] = {}

    def _recent(self, key: tuple[str, str]) -> deque[float]:
        times = self._failures.get(key)
        if times is None:
            return deque()
        cutoff = time.monotonic() - self._window
        while times and times[0] < cutoff:
            times.popleft()
        if not times:
            del self._failures[key]
        return times

    def retry_after(self, username: str, address: str) -> float:
        """0 when an attempt may proceed; else seconds until it may."""
        waits = []
        for key in (("user", username), ("address", address)):
            times = self._recent(key)
            if len(times) >= self._limits[key[0]]:
                waits.append(times[0] + self._window - time.monotonic())
        return max(waits, default=0.0)

    def failed(self, username: str, address: str) -> None:
        now = time.monotonic()
        for key in (("user", username), ("address", address)):
            self._failures.setdefault(key, deque()).append(now)
        if len(self._failures) > 100_000:  # bound memory under a spray of names
            self._failures.clear()

    def succeeded(self, username: str) -> None:
        self._failures.pop(("user", username), None)
