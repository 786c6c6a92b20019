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

Observer = Callable[["Lifecycle", State, State], None]


class Lifecycle:
    """One connection's state. `advance` is the only way it changes; observers (the listener's
    pre-authentication counters) hear every transition."""

    def __init__(self, peer: str, observer: Observer | None = None):
        self.peer = peer
        self.state = State.UPGRADING
        self._observer = observer
        self._closing = asyncio.Event()
        self._keys_exchanged = asyncio.Event()
        self._progress = asyncio.Event()  # set and replaced on every transition

    def advance(self, new: State) -> bool:
        """Move to `new` if the machine allows it from here; False (and no change) otherwise."""
        old = self.state
        if new not in _ALLOWED[old]:
            return False
        self.state = new
        if new is State.CLOSING:
            self._closing.set()
            self._keys_exchanged.set()  # nobody waits for a handshake that will not finish
        self._progress.set()
        self._progress = asyncio.Event()
        if self._observer is not None:
            self._observer(self, old, new)
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

    async def wait_reached(self, state: State) -> None:
        """Return once the connection is at `state` or beyond (closing counts as beyond)."""
        while self.state < state:
            await self._progress.wait()

    def key_exchange_done(self) -> None:
        """The CPU-heavy part of the handshake is over (the session calls this from begin_auth,
        the first hook after the key exchange); the listener then frees the handshake slot."""
        self._keys_exchanged.set()

    async def wait_key_exchange(self) -> None:
        await self._keys_exchanged.wait()
