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
from ..wire.pipe import Pipe, TrafficMeter

__all__ = ["Tunnel"]

log = logging.getLogger("rportd.tunnels")

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
        pipe = Pipe(self.meter)
        protocol = pipe.socket_protocol()
        task = asyncio.get_running_loop().create_task(self._start(pipe, opener))
        pipe.closed.add_done_callback(lambda _: self.pipes.discard(pipe))
        task.add_done_callback(_log_failure)
        return protocol

    async def _start(self, pipe: Pipe, opener: ChannelOpener) -> None:
        await pipe.connected
        transport = pipe.transport
        assert transport is not None
        peer = transport.get_extra_info("peername") or ("", 0)
        if self.acl is not None and not self.acl.allows(str(peer[0])):
            log.info("tunnel %s: connection from %s refused by ACL", self.id, peer[0])
            pipe.close()
            return
        self.pipes.add(pipe)
        target = f"{self.remote.rhost}:{self.remote.rport}"
        try:
            await opener(target, pipe)
        except Exception as exc:  # the agent refused or went away: drop this stream only
            log.info("tunnel %s: channel to %s failed: %s", self.id, target, exc)
            pipe.close()

    async def close(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            server.close()
        for pipe in list(self.pipes):
            pipe.close()
        self.pipes.clear()
        if server is not None:
            await server.wait_closed()


def _family(host: str) -> int:
    try:
        return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        return socket.AF_UNSPEC


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("tunnel stream failed", exc_info=task.exception())
