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

__all__ = ["Remote", "Acl", "PortPool", "parse_remote_spec", "TunnelError", "join_host_port",
           "split_protocol", "PROTOCOLS", "take_matching"]


class TunnelError(Conflict):
    """A tunnel could not be set up (port in use, excluded, pool exhausted)."""


PROTOCOLS = ("tcp", "udp", "tcp+udp")  # openrport's; rportd tunnels TCP only
# openrport's newer Remote keys rportd accepts without acting on them: `owner` and `tunnel_url`
# are the server's to set; `auth_user` / `auth_password` guard http_proxy tunnels, which rportd
# refuses, so the password is never kept (nor stored, nor shown).
_IGNORED_TEXT = ("owner", "tunnel_url", "auth_user", "auth_password")


@dataclass
class Remote:
    """rport's Remote as JSON: lhost, lport, rhost, rport, lport_random, scheme, acl (2021), and
    openrport's name, protocol, idle_timeout_minutes, auto_close, http_proxy, host_header."""

    lhost: str
    lport: str
    rhost: str
    rport: str
    lport_random: bool = False
    scheme: str | None = None
    acl: str | None = None
    name: str = ""
    protocol: str = "tcp"
    idle_timeout_minutes: int = 0
    auto_close: int = 0  # Go nanoseconds
    http_proxy: bool = False
    host_header: str = ""

    @classmethod
    def from_json(cls, data: Any) -> Remote:
        """Parse an agent's or a stored remote; any malformed field is a BadRequest (the agent
        gets `invalid connection request: ...`), never another exception."""
        if not isinstance(data, dict):
            raise BadRequest("a remote must be a JSON object")
        if "rport" not in data:
            raise BadRequest("a remote needs rport")
        for key in _IGNORED_TEXT:
            _text(data, key)
        remote = cls(_text(data, "lhost"), _text(data, "lport"), _text(data, "rhost"),
                     _text(data, "rport"), _flag(data, "lport_random"),
                     _text(data, "scheme") or None, _text(data, "acl") or None,
                     _text(data, "name"), _text(data, "protocol").lower() or "tcp",
                     _number(data, "idle_timeout_minutes"), _number(data, "auto_close"),
                     _flag(data, "http_proxy"), _text(data, "host_header"))
        remote.validate()
        return remote

    def check_supported(self) -> None:
        """What openrport's server does and rportd does not: refused with a clear text."""
        if self.protocol != "tcp":
            raise BadRequest(f"protocol {self.protocol!r} is not supported: rportd tunnels are "
                             "TCP only", code="ERR_CODE_TUNNEL_PROTOCOL_UNSUPPORTED")
        unsupported = [name for name, used in (("http_proxy", self.http_proxy),
                                               ("idle_timeout_minutes", self.idle_timeout_minutes),
                                               ("auto_close", self.auto_close)) if used]
        if unsupported:
            raise BadRequest(f"{', '.join(unsupported)} is not supported by rportd (tunnels "
                             "stay open until deleted, without an HTTP proxy)",
                             code="ERR_CODE_TUNNEL_OPTION_UNSUPPORTED")

    @property
    def target(self) -> str:
        """Where the agent dials: "host:port", IPv6 hosts in brackets (Go's net.Dial form)."""
        return join_host_port(self.rhost or "127.0.0.1", self.rport)

    def validate(self) -> None:
        for name, value in (("lport", self.lport), ("rport", self.rport)):
            if value and (not value.isdigit() or not 0 < int(value) <= 65535):
                raise BadRequest(f"{name} {value!r} is not a port 1..65535")
        if not self.rport:
            raise BadRequest("the remote port is required")
        if self.protocol not in PROTOCOLS:
            raise BadRequest(f"protocol {self.protocol!r} is not one of {', '.join(PROTOCOLS)}")
        for name, host in (("lhost", self.lhost), ("rhost", self.rhost)):
            if any(c.isspace() or c in "[]/" for c in host) or len(host) > 255:
                raise BadRequest(f"{name} {host!r} is not a host name or IP address")
        if self.acl:
            Acl.parse(self.acl)

    def check_local(self, pool: PortPool) -> None:
        """The rules every tunnel's local side obeys, whoever asked for it (API or agent): an
        IP address to bind (a name would bind whatever it resolves to), no excluded port."""
        if self.lhost:
            try:
                ipaddress.ip_address(self.lhost)
            except ValueError:
                raise BadRequest(f"local host {self.lhost!r} is not an IP address",
                                 code="ERR_CODE_INVALID_LOCAL_HOST") from None
        if self.lport and pool.excluded(int(self.lport)):
            raise BadRequest(f"local port {self.lport} is in excluded_ports",
                             code="ERR_CODE_LOCAL_PORT_EXCLUDED")

    def to_json(self) -> dict[str, Any]:
        return {"lhost": self.lhost, "lport": self.lport, "rhost": self.rhost, "rport": self.rport,
                "lport_random": self.lport_random, "scheme": self.scheme, "acl": self.acl,
                "name": self.name, "protocol": self.protocol}


def take_matching(previous: list[tuple[str, Remote]],
                  wanted: Remote) -> tuple[str, Remote] | None:
    """Remove and return the earlier tunnel (id, remote) that `wanted` asks for again, if any."""
    for index, (_, earlier) in enumerate(previous):
        same_target = (earlier.rhost, earlier.rport) == (wanted.rhost or "127.0.0.1", wanted.rport)
        same_port = earlier.lport == wanted.lport or (not wanted.lport and earlier.lport_random)
        if same_target and same_port:
            return previous.pop(index)
    return None


def _text(data: dict[str, Any], key: str) -> str:
    """A string field that JSON may also carry as a number (ports); anything else is refused."""
    value = data.get(key)
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise BadRequest(f"{key} must be a string")
    return str(value)


def _number(data: dict[str, Any], key: str) -> int:
    value = data.get(key) or 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadRequest(f"{key} must be a whole number 0 or more")
    return value


def _flag(data: dict[str, Any], key: str) -> bool:
    value = data.get(key, False)
    if not isinstance(value, bool):
        raise BadRequest(f"{key} must be true or false")
    return value


def join_host_port(host: str, port: str | int) -> str:
    """Go's net.JoinHostPort: "[::1]:22" for IPv6, "host:22" otherwise."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def split_protocol(target: str) -> tuple[str, str]:
    """openrport's `.../tcp`, `.../udp`, `.../tcp+udp` suffix (remotes and a channel's target):
    (the rest, the protocol); "tcp" without one."""
    rest, slash, protocol = target.rpartition("/")
    if slash and protocol.lower() in PROTOCOLS:
        return rest, protocol.lower()
    return target, "tcp"


def parse_remote_spec(spec: str) -> Remote:
    """rport's client syntax: A:B:C:D, B:C:D (lhost 0.0.0.0), C:D (random local), D; each may
    end in openrport's /tcp or /udp."""
    spec, protocol = split_protocol(spec)
    parts = spec.rsplit(":", 3) if spec.count(":") <= 3 else _split_ipv6(spec)
    if len(parts) == 4:
        remote = Remote(parts[0], parts[1], parts[2], parts[3])
    elif len(parts) == 3:
        remote = Remote("0.0.0.0", parts[0], parts[1], parts[2])
    elif len(parts) == 2:
        remote = Remote("", "", parts[0], parts[1])
    else:
        remote = Remote("", "", "0.0.0.0", parts[0])
    remote.protocol = protocol
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
