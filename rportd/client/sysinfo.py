"""What the agent reports about its machine: hostname, OS fields and addresses, as rport does."""

from __future__ import annotations

import fcntl
import ipaddress
import platform
import socket
import struct
from pathlib import Path

__all__ = ["system_details"]

_GOARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64",
           "i386": "386", "i686": "386", "armv7l": "arm", "armv6l": "arm"}


def _os_family() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("ID="):
                return line[3:].strip().strip('"')
    except OSError:
        pass
    return platform.system().lower()


def _ipv4_addresses() -> list[str]:
    found = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _, name in socket.if_nameindex():
            try:
                packed = fcntl.ioctl(sock.fileno(), 0x8915,  # SIOCGIFADDR
                                     struct.pack("256s", name.encode()[:15]))
            except OSError:
                continue
            address = socket.inet_ntoa(packed[20:24])
            if not ipaddress.ip_address(address).is_loopback:
                found.append(address)
    return found


def _ipv6_addresses() -> list[str]:
    found: list[str] = []
    try:
        lines = Path("/proc/net/if_inet6").read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        raw = line.split()[0]
        address = ipaddress.IPv6Address(bytes.fromhex(raw))
        if not address.is_loopback:
            found.append(str(address))
    return found


def system_details() -> dict[str, object]:
    """The ConnectionRequest fields that describe this machine (Go field names)."""
    uname = platform.uname()
    return {
        "OS": " ".join([uname.system, uname.node, uname.release, uname.version, uname.machine]),
        "OSArch": _GOARCH.get(uname.machine.lower(), uname.machine.lower()),
        "OSFamily": _os_family(),
        "OSKernel": uname.system.lower(),
        "Hostname": socket.gethostname(),
        "IPv4": _ipv4_addresses(),
        "IPv6": _ipv6_addresses(),
    }
