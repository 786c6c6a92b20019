"""The states of one agent connection, and the only place they change.

    upgrading -> handshaking -> authenticated -> registering -> registered -> closing -> closed

Any state may go to `closing`; `registering` may fall back to `authenticated` (a refused or retried
request). Once `closing`, no tunnel, channel or registry write is accepted: callers ask
`accepting_work` before starting one and re-check it after every await.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable

__all__ = ["State", "Lifecycle"]


class State(enum.IntEnum):
    UPGRADING = 1
    HANDSHAKING = 2
    AUTHENTICATED = 3
    REGISTERING = 4
    REGISTERED = 5
    CLOSING = 6
    CLOSED = 7


_ALLOWED: dict[State, frozenset[State]] = {
    State.UPGRADING: frozenset({State.HANDSHAKING, State.CLOSING}),
    State.HANDSHAKING: frozenset({State.AUTHENTICATED, State.CLOSING}),
    State.AUTHENTICATED: frozenset({State.REGISTERING, State.CLOSING}),
    State.REGISTERING: frozenset({State.REGISTERED, State.AUTHENTICATED, State.CLOSING}),
    State.REGISTERED: frozenset({State.CLOSING}),
    State.CLOSING: frozenset({State.CLOSED}),
    State.CLOSED: frozenset(),
}

Observer = Callable[[State, State], None]


class Lifecycle:
    """One connection's state. `advance` is the only way it changes; observers (the listener's
    pre-authentication counters) hear every transition."""

    def __init__(self, peer: str, observer: Observer | None = None):
        self.peer = peer
        self.state = State.UPGRADING
        self._observer = observer
        self._closing = asyncio.Event()

    def advance(self, new: State) -> bool:
        """Move to `new` if the machine allows it from here; False (and no change) otherwise."""
        old = self.state
        if new not in _ALLOWED[old]:
            return False
        self.state = new
        if new is State.CLOSING:
            self._closing.set()
        if self._observer is not None:
            self._observer(old, new)
        return True

    def close(self) -> None:
        """Start closing (idempotent)."""
        if self.state < State.CLOSING:
            self.advance(State.CLOSING)

    @property
    def accepting_work(self) -> bool:
        return self.state < State.CLOSING

    @property
    def authenticated(self) -> bool:
        return State.AUTHENTICATED <= self.state < State.CLOSING

    async def wait_closing(self) -> None:
        await self._closing.wait()
