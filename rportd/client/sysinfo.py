"""What the agent reports about its machine, as the newest rport client does: hostname, OS,
virtualization, CPU, memory, time zone and addresses (gopsutil's sources on Linux)."""

from __future__ import annotations

import fcntl
import ipaddress
import os
import platform
import socket
import struct
import time
from pathlib import Path

__all__ = ["system_details", "timezone_text"]

_GOARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64",
           "i386": "386", "i686": "386", "armv7l": "arm", "armv6l": "arm"}


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def _os_release() -> dict[str, str]:
    fields = {}
    for line in _read("/etc/os-release").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip()] = value.strip().strip('"')
    return fields


def _os_family() -> str:
    return _os_release().get("ID") or platform.system().lower()


def _os_version() -> str:
    """Debian's point release from /etc/debian_version (gopsutil does so), else VERSION_ID."""
    debian = _read("/etc/debian_version").strip()
    if debian and debian[0].isdigit():
        return debian
    return _os_release().get("VERSION_ID", "") or platform.release()


def _os_full_name() -> str:
    """"Debian 12.11": the platform, capitalised, and its version (gopsutil's Platform)."""
    family = _os_family()
    return f"{family[:1].upper()}{family[1:]} {_os_version()}".strip()


_HYPERVISORS = (("kvm", "KVM"), ("qemu", "KVM"), ("virtualbox", "vbox"), ("vmware", "vmware"),
                ("xen", "xen"), ("microsoft", "hyperv"), ("bochs", "bochs"))


def _virtualization() -> tuple[str, str]:
    """(system, role) as gopsutil names them: containers first, then the DMI vendor."""
    if os.path.exists("/.dockerenv"):
        return "docker", "guest"
    if "container=lxc" in _read("/proc/1/environ").replace("\0", " "):
        return "lxc", "guest"
    dmi = (_read("/sys/class/dmi/id/sys_vendor") + _read("/sys/class/dmi/id/product_name")).lower()
    for needle, name in _HYPERVISORS:
        if needle in dmi:
            return name, "guest"
    if os.path.exists("/proc/xen"):
        return "xen", "guest"
    return "", ""


def _cpu() -> dict[str, str]:
    """The first processor's entry of /proc/cpuinfo."""
    info: dict[str, str] = {}
    for line in _read("/proc/cpuinfo").splitlines():
        if not line.strip():
            break
        key, _, value = line.partition(":")
        info[key.strip()] = value.strip()
    return info


def _memory_total() -> int:
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 0


def timezone_text(now: time.struct_time | None = None) -> str:
    """Go's zone name and offset as the rport client formats them: "UTC (UTC+00:00)"."""
    now = now or time.localtime()
    offset = now.tm_gmtoff or 0
    sign, offset = ("-", -offset) if offset < 0 else ("+", offset)
    return f"{now.tm_zone} (UTC{sign}{offset // 3600:02d}:{offset % 3600 // 60:02d})"


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
    system, role = _virtualization()
    cpu = _cpu()
    return {
        "OS": " ".join([uname.system, uname.node, uname.release, uname.version, uname.machine]),
        "OSFullName": _os_full_name(), "OSVersion": _os_version(),
        "OSVirtualizationSystem": system, "OSVirtualizationRole": role,
        "OSArch": _GOARCH.get(uname.machine.lower(), uname.machine.lower()),
        "OSFamily": _os_family(),
        "OSKernel": uname.system.lower(),
        "Hostname": socket.gethostname(),
        "CPUFamily": cpu.get("cpu family", ""), "CPUModel": cpu.get("model", ""),
        "CPUModelName": cpu.get("model name", ""), "CPUVendor": cpu.get("vendor_id", ""),
        "NumCPUs": os.cpu_count() or 0, "MemoryTotal": _memory_total(),
        "Timezone": timezone_text(),
        "IPv4": _ipv4_addresses(),
        "IPv6": _ipv6_addresses(),
    }
