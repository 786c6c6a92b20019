"""rport's Remote (a tunnel's specification), its ACL and the pool of random local ports.

Shared by the agent port (which makes tunnels live), the API (which parses requests for them) and
our client (which parses rport's `A:B:C:D` syntax). Nothing here opens a socket.
"""

from __future__ import annotations

import ipaddress
import random
from dataclasses import dataclass
from typing import Any

from .config import PortRange
from .errors import BadRequest, Conflict

__all__ = ["Remote", "Acl", "PortPool", "parse_remote_spec", "TunnelError"]


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
