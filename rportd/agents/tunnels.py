"""Tunnels: a listener on rportd per tunnel, its ACL, port allocation, and the rport Remote JSON.

Each accepted connection is checked against the ACL and becomes a server-opened `rport` channel
to "rhost:rport" on the agent, joined to the socket by a Pipe (both close when either ends).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ..config import PortRange
from ..errors import BadRequest, Conflict
from ..wire.pipe import Pipe, TrafficMeter

__all__ = ["Remote", "Tunnel", "Acl", "PortPool", "parse_remote_spec", "TunnelError"]

log = logging.getLogger("rportd.tunnels")

ChannelOpener = Callable[[str, Pipe], Awaitable[None]]


class TunnelError(Conflict):
    """A tunnel could not be set up (port in use, excluded, pool exhausted)."""


@dataclass
class Remote:
    """rport's share/remote.go Remote, as JSON: lhost, lport, rhost, rport, lport_random, scheme, acl."""

    lhost: str
    lport: str
    rhost: str
    rport: str
    lport_random: bool = False
    scheme: str | None = None
    acl: str | None = None

    @classmethod
    def from_json(cls, data: Any) -> Remote:
        if not isinstance(data, dict):
            raise BadRequest("a remote must be a JSON object")
        try:
            remote = cls(str(data.get("lhost") or ""), str(data.get("lport") or ""),
                         str(data.get("rhost") or ""), str(data["rport"]),
                         bool(data.get("lport_random", False)),
                         data.get("scheme") or None, data.get("acl") or None)
        except KeyError:
            raise BadRequest("a remote needs rport") from None
        remote.validate()
        return remote

    def validate(self) -> None:
        for name, value in (("lport", self.lport), ("rport", self.rport)):
            if value and (not value.isdigit() or not 0 < int(value) <= 65535):
                raise BadRequest(f"{name} {value!r} is not a port 1..65535")
        if not self.rport:
            raise BadRequest("the remote port is required")
        if self.acl:
            Acl.parse(self.acl)

    def to_json(self) -> dict[str, Any]:
        return {"lhost": self.lhost, "lport": self.lport, "rhost": self.rhost, "rport": self.rport,
                "lport_random": self.lport_random, "scheme": self.scheme, "acl": self.acl}


def parse_remote_spec(spec: str) -> Remote:
    """rport's client syntax: A:B:C:D, B:C:D (lhost 0.0.0.0), C:D (random local), D."""
    parts = spec.rsplit(":", 3) if spec.count(":") <= 3 else _split_ipv6(spec)
    if len(parts) == 4:
        remote = Remote(parts[0], parts[1], parts[2], parts[3])
    elif len(parts) == 3:
        remote = Remote("0.0.0.0", parts[0], parts[1], parts[2])
    elif len(parts) == 2:
        remote = Remote("", "", parts[0], parts[1])
    else:
        remote = Remote("", "", "0.0.0.0", parts[0])
    remote.validate()
    return remote


def _split_ipv6(spec: str) -> list[str]:
    # "[::1]:2222:[::1]:22" style; brackets keep host colons apart
    out, current, depth = [], "", 0
    for char in spec:
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
        if char == ":" and depth == 0:
            out.append(current.strip("[]"))
            current = ""
        else:
            current += char
    out.append(current.strip("[]"))
    return out


@dataclass(frozen=True)
class Acl:
    """Allowed source addresses: IPv4/IPv6 addresses and CIDRs, comma separated."""

    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]

    @classmethod
    def parse(cls, text: str) -> Acl:
        networks = []
        for item in text.split(","):
            item = item.strip()
            if not item:
                continue
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise BadRequest(f"ACL entry {item!r} is not an IP address or CIDR",
                                 code="ERR_CODE_INVALID_ACL") from None
        return cls(tuple(networks))

    def allows(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        return any(ip.version == net.version and ip in net for net in self.networks)


class PortPool:
    """Random local ports from `used_ports` minus `excluded_ports` and ports already taken."""

    def __init__(self, used: tuple[PortRange, ...], excluded: tuple[PortRange, ...]):
        self._used = used
        self._excluded = excluded

    def candidates(self, taken: set[int]) -> list[int]:
        ports = [p for r in self._used for p in range(r.first, r.last + 1)
                 if not any(p in e for e in self._excluded) and p not in taken]
        random.shuffle(ports)
        return ports

    def excluded(self, port: int) -> bool:
        return any(port in r for r in self._excluded)


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
