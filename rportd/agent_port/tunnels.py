"""Live tunnels: a listener on rportd per tunnel, checked against its ACL.

Each accepted connection is checked against the ACL and becomes a server-opened `rport` channel
to "rhost:rport" on the agent, joined to the socket by a Pipe (both close when either ends).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ..tunnel_spec import Acl, Remote, TunnelError
from ..wire.pipe import WRITE_DEADLINE, Pipe, TrafficMeter

__all__ = ["Tunnel", "CLOSE_WAIT"]

log = logging.getLogger("rportd.tunnels")

# How long closing a tunnel waits for its listener to finish. Its streams are aborted first, so
# this only matters if the loop is very busy; from Python 3.12 `wait_closed()` waits for every
# accepted connection and must never be awaited unbounded.
CLOSE_WAIT = 2.0

ChannelOpener = Callable[[str, Pipe], Awaitable[None]]


@dataclass
class Tunnel:
    """A live tunnel: its Remote plus the listening server and open streams."""

    id: str
    remote: Remote
    server: asyncio.AbstractServer | None = None
    pipes: set[Pipe] = field(default_factory=set)
    acl: Acl | None = None
    meter: TrafficMeter | None = None
    write_deadline: float = WRITE_DEADLINE
    paused: bool = False  # the agent's connection cannot take more: read no tunnel socket

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, **self.remote.to_json()}

    async def listen(self, opener: ChannelOpener) -> None:
        loop = asyncio.get_running_loop()
        self.acl = Acl.parse(self.remote.acl) if self.remote.acl else None
        host = self.remote.lhost or "0.0.0.0"
        try:
            self.server = await loop.create_server(lambda: self._accept(opener), host,
                                                   int(self.remote.lport), reuse_address=True,
                                                   family=_family(host))
        except OSError as exc:
            raise TunnelError(f"cannot listen on {host}:{self.remote.lport}: {exc.strerror}",
                              code="ERR_CODE_LOCAL_PORT_IN_USE") from None

    def _accept(self, opener: ChannelOpener) -> asyncio.Protocol:
        pipe = Pipe(self.meter, self.write_deadline)
        protocol = pipe.socket_protocol()
        self.pipes.add(pipe)  # from accept on, so close() aborts it even before it started
        if self.paused:
            pipe.block_reading("connection")
        pipe.closed.add_done_callback(lambda _: self.pipes.discard(pipe))
        task = asyncio.get_running_loop().create_task(self._start(pipe, opener))
        task.add_done_callback(_log_failure)
        return protocol

    async def _start(self, pipe: Pipe, opener: ChannelOpener) -> None:
        await pipe.connected
        transport = pipe.transport
        assert transport is not None
        peer = transport.get_extra_info("peername") or ("", 0)
        if self.acl is not None and not self.acl.allows(str(peer[0])):
            log.info("tunnel %s: connection from %s refused by ACL", self.id, peer[0])
            pipe.abort()
            return
        if self.server is None:  # closed meanwhile
            pipe.abort()
            return
        target = self.remote.target
        try:
            await opener(target, pipe)
        except Exception as exc:  # the agent refused or went away: drop this stream only
            log.info("tunnel %s: channel to %s failed: %s", self.id, target, exc)
            pipe.abort()

    def set_paused(self, paused: bool) -> None:
        """The agent's SSH connection paused or resumed writing: so do all our sockets' reads."""
        self.paused = paused
        for pipe in self.pipes:
            if paused:
                pipe.block_reading("connection")
            else:
                pipe.unblock_reading("connection")

    async def close(self) -> None:
        """Stop listening and abort every stream: a user that never reads cannot hold it up."""
        server, self.server = self.server, None
        if server is not None:
            server.close()
        for pipe in list(self.pipes):
            pipe.abort()
        self.pipes.clear()
        if server is not None:
            await _bounded(server.wait_closed(), CLOSE_WAIT)


async def _bounded(waiting: Awaitable[None], seconds: float) -> None:
    try:
        await asyncio.wait_for(waiting, seconds)
    except TimeoutError:
        log.warning("a tunnel listener did not finish closing within %ss", seconds)


def _family(host: str) -> int:
    try:
        return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        return socket.AF_UNSPEC


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("tunnel stream failed", exc_info=task.exception())
