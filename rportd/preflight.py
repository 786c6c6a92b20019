"""Start-up checks before anything listens: every file rportd writes or reads, then every bind."""

from __future__ import annotations

import errno
import socket
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh

from .config import Config
from .errors import ConfigError

__all__ = ["Listeners", "bind_listeners", "check_files", "check_writable_file", "split_address"]

_HOST_KEY_FILE = "rportd_host_key"  # as wire.hostkey.load_or_create_host_key names it


@dataclass
class Listeners:
    """Sockets bound (not yet listening) for each address; empty `api` when there is no API."""

    agent: list[socket.socket]
    api: list[socket.socket] = field(default_factory=list)

    def close(self) -> None:
        for sock in (*self.agent, *self.api):
            sock.close()


def split_address(address: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port`; an empty host means every IPv4 interface, as rport does."""
    host, _, port = address.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


def check_files(config: Config) -> None:
    """The files and directories rportd needs, checked for what it will do with them, before the
    database is opened (the runtime loads them again, still before any bind)."""
    _check_writable_dir(config.server.data_dir, "[server] data_dir")
    if not config.server.key_seed:
        _check_host_key(config.server.data_dir / _HOST_KEY_FILE)
    api = config.api
    if not api.address:
        return
    for path, setting in ((api.cert_file, "[api] cert_file"), (api.key_file, "[api] key_file")):
        if path:
            _check_readable_file(path, setting)
    if api.access_log_file:
        check_writable_file(api.access_log_file, "[api] access_log_file")


def _check_writable_dir(path: Path, setting: str) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise ConfigError(setting, f"{str(path)!r} is not a writable directory: "
                                   f"{exc.strerror or exc}") from None


def _check_host_key(path: Path) -> None:
    if not path.exists():
        return
    try:
        asyncssh.read_private_key(str(path))
    except (OSError, ValueError, asyncssh.KeyImportError) as exc:
        raise ConfigError("[server] data_dir", f"cannot load the host key {str(path)!r}: {exc}; "
                                               "remove it to have a new one made") from None


def check_writable_file(path: str, setting: str) -> None:
    """Open for appending (created if missing), as the log handlers will."""
    try:
        with open(path, "a", encoding="utf-8"):
            pass
    except OSError as exc:
        raise ConfigError(setting, f"cannot write {path!r}: {exc.strerror or exc}") from None


def _check_readable_file(path: str, setting: str) -> None:
    try:
        with open(path, "rb") as handle:
            handle.read(1)
    except OSError as exc:
        raise ConfigError(setting, f"cannot read {path!r}: {exc.strerror or exc}") from None


def bind_listeners(config: Config) -> Listeners:
    """Bind the agent and API addresses up front, so a failure of either leaves nothing
    listening; the servers later listen on these very sockets. The caller closes them."""
    listeners = Listeners(bind_address(config.server.address, "[server] address"))
    try:
        if config.api.address:
            listeners.api = bind_address(config.api.address, "[api] address")
    except BaseException:
        listeners.close()
        raise
    return listeners


def bind_address(address: str, setting: str) -> list[socket.socket]:
    """One bound TCP socket per address `host` resolves to, as asyncio's create_server binds."""
    host, port = split_address(address)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        raise ConfigError(setting, f"cannot resolve {host!r}: {_reason(exc)}") from None
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, sockaddr in dict.fromkeys(infos):
            sockets.append(_bind_one(family, kind, proto, sockaddr, address, setting))
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _bind_one(family: int, kind: int, proto: int, sockaddr: tuple[object, ...], address: str,
              setting: str) -> socket.socket:
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(sockaddr)
    except OSError as exc:
        sock.close()
        raise ConfigError(setting, _bind_failure(address, sockaddr, exc)) from None
    return sock


def _bind_failure(address: str, sockaddr: tuple[object, ...], exc: OSError) -> str:
    host, port = sockaddr[0], sockaddr[1]
    where = "" if split_address(address) == (host, port) else f" ({host}:{port})"
    if exc.errno == errno.EADDRINUSE:
        return f"cannot listen on {address!r}{where}: the port is already in use"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen on {address!r}: {host} is not an address of this machine"
    if exc.errno == errno.EACCES:
        return f"cannot listen on {address!r}: permission denied for port {port}"
    return f"cannot listen on {address!r}{where}: {exc.strerror or exc}"


def _reason(exc: Exception) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or "unknown"
