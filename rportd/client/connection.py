"""The agent's connection loop: WebSocket, SSH (as `SSH-rport-v1-client`), `new_connection`,
then serving `rport` channels and `check_port` until the link drops; reconnects with the rport
client's backoff (100 ms doubling, capped, reset after a good registration)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any, ClassVar

import asyncssh
from asyncssh import SSHTCPChannel
from asyncssh.connection import SSHClientConnection

from .. import __version__
from ..tunnel_spec import split_protocol
from ..wire.asyncssh_internals import (
    CLIENT_VERSION,
    MAX_PACKET,
    WINDOW,
    RportVersionMixin,
    go_window_channel,
    reply_global,
    send_global_request,
)
from ..wire.hostkey import fingerprint
from ..wire.pipe import Pipe
from .commands import CommandPolicy, CommandRunner, answer_run_cmd, result_sender
from .request import connection_request
from .websocket import ProxyAddress, ServerAddress, connect_websocket

__all__ = ["AgentSettings", "run_agent", "connect_once", "open_ssh", "register", "AgentExit",
           "RetryableError", "WIRE_PATTERNS"]

log = logging.getLogger("rport.client")

# The Go client's (x/crypto 0.4.0) preferences, in its order.
KEX_ALGS = ["curve25519-sha256", "curve25519-sha256@libssh.org", "ecdh-sha2-nistp256",
            "ecdh-sha2-nistp384", "ecdh-sha2-nistp521", "diffie-hellman-group14-sha256",
            "diffie-hellman-group14-sha1"]
CIPHERS = ["aes128-gcm@openssh.com", "chacha20-poly1305@openssh.com", "aes128-ctr", "aes192-ctr",
           "aes256-ctr"]
MACS = ["hmac-sha2-256-etm@openssh.com", "hmac-sha2-256", "hmac-sha1", "hmac-sha1-96"]
MAGIC_RETRY = "client is already connected:"
# "asyncssh": asyncssh's own flow control (a window adjust once half the window is consumed).
# "go": as the real Go client (x/crypto/ssh) on the wire, for benchmarks
# (wire/asyncssh_internals.go_window_channel).
WIRE_PATTERNS = ("asyncssh", "go")


class AgentExit(Exception):
    """Stop for good, as the real client exits (a refused registration, a bad handshake)."""


class RetryableError(Exception):
    """Try again after the backoff delay."""


@dataclass
class AgentSettings:
    server: ServerAddress
    auth_id: str
    password: str = field(repr=False)
    client_id: str = ""
    name: str = ""
    tags: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    remotes: list[dict[str, Any]] = field(default_factory=list)
    fingerprint: str = ""
    keepalive: float = 30.0
    max_retry_count: int = -1
    max_retry_interval: float = 300.0
    wire_pattern: str = "asyncssh"
    source_address: str = ""  # the local address to connect from (benchmarks, multi-homed hosts)
    raw_request: bytes = b""  # tests: send these bytes as the connection request instead
    go_frames: bool = False  # tests: cut WebSocket frames as the Go client does (4 KiB + rest)
    proxy: ProxyAddress | None = None  # --proxy: an HTTP CONNECT proxy
    headers: dict[str, str] = field(default_factory=dict)  # --header, --hostname (as Host)
    allow_root: bool = False
    commands: CommandPolicy = field(default_factory=CommandPolicy)

    def request(self) -> bytes:
        """The newest rport client's ConnectionRequest, field for field (request.py)."""
        return self.raw_request or connection_request(self)



class RportClientConnection(RportVersionMixin, SSHClientConnection):
    """asyncssh's client connection speaking rport-v1: banner, server requests, `rport` channels."""

    rport_version = CLIENT_VERSION
    global_requests: ClassVar[dict[str, str]] = {"check_port": "_on_check_port",
                                                 "run_cmd": "_on_run_cmd"}
    channel_opens: ClassVar[dict[str, str]] = {"rport": "_on_rport_open"}
    runner: CommandRunner | None = None  # set once connected (open_ssh)

    def _on_check_port(self, payload: bytes) -> None:
        self.create_task(_answer_check_port(self, payload), self.logger)

    def _on_run_cmd(self, payload: bytes) -> None:
        self.create_task(answer_run_cmd(self, self.runner, payload), self.logger)

    def _on_rport_open(self, payload: bytes) -> tuple[Any, Any]:
        """The target may end in openrport's /tcp or /udp; this agent tunnels TCP only."""
        target, protocol = split_protocol(payload.decode("utf-8", "replace"))
        if protocol != "tcp":
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED,
                                            f"protocol {protocol} is not supported")
        return self._tunnel_channel(), _dial(target)

    def _tunnel_channel(self) -> SSHTCPChannel[bytes]:
        return self.create_tcp_channel(window=WINDOW, max_pktsize=MAX_PACKET)


class GoPatternClientConnection(RportClientConnection):
    """Our agent with the Go client's tunnel flow control (`--wire-pattern go`)."""

    def _tunnel_channel(self) -> SSHTCPChannel[bytes]:
        return go_window_channel(self, WINDOW, MAX_PACKET)


async def _answer_check_port(conn: SSHClientConnection, payload: bytes) -> None:
    try:
        request = json.loads(payload)
        host_port, timeout = str(request["HostPort"]), float(request.get("Timeout", 2e9)) / 1e9
        host, _, port = host_port.rpartition(":")
    except (ValueError, KeyError, TypeError) as exc:
        reply_global(conn, False, f"invalid check_port request: {exc}".encode())
        return
    answer = {"Open": True, "ErrMsg": ""}
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host.strip("[]"), int(port)),
                                           timeout)
        writer.close()
    except (OSError, TimeoutError, ValueError) as exc:
        errno = getattr(exc, "errno", None)
        reason = os.strerror(errno) if errno else "i/o timeout"
        answer = {"Open": False, "ErrMsg": f"dial tcp {host_port}: connect: {reason.lower()}"}
    reply_global(conn, True, json.dumps(answer, separators=(",", ":")).encode())



class _ClosedAtOnce(asyncssh.SSHTCPSession[bytes]):
    """rport's client accepts a channel whose dial failed and closes it immediately."""

    def connection_made(self, chan: Any) -> None:
        self._chan = chan

    def session_started(self) -> None:
        self._chan.close()


async def _dial(target: str) -> asyncssh.SSHTCPSession[bytes]:
    host, _, port = target.rpartition(":")
    pipe = Pipe()
    loop = asyncio.get_running_loop()
    try:
        await loop.create_connection(pipe.socket_protocol, host.strip("[]"), int(port))
    except (OSError, ValueError) as exc:
        log.info("channel to %s: dial failed: %s", target, exc)
        return _ClosedAtOnce()
    return pipe.channel_session()


class _AgentSSHClient(asyncssh.SSHClient):
    def __init__(self, expected_fingerprint: str):
        self._expected = expected_fingerprint.lower()
        self.fingerprint = ""

    def validate_host_public_key(self, host: str, addr: str, port: int,
                                 key: asyncssh.SSHKey) -> bool:
        """Called during key exchange; with --fingerprint, only a matching server passes."""
        self.fingerprint = fingerprint(key)
        log.info("Fingerprint %s", self.fingerprint)
        return self.fingerprint.startswith(self._expected)


async def connect_once(settings: AgentSettings) -> tuple[SSHClientConnection, list[Any]]:
    """Connect, authenticate and register. Returns the connection and the tunnels set up."""
    conn = await open_ssh(settings)
    return conn, await register(conn, settings.request())


async def open_ssh(settings: AgentSettings) -> SSHClientConnection:
    """WebSocket upgrade plus an authenticated SSH connection, not yet registered."""
    via = f" via {settings.proxy.display}" if settings.proxy else ""
    log.info("Connecting to %s%s", settings.server.url, via)
    try:
        transport = await connect_websocket(settings.server, f"rport {__version__}",
                                            source_address=settings.source_address,
                                            proxy=settings.proxy, headers=settings.headers,
                                            go_frames=settings.go_frames)
    except (OSError, TimeoutError) as exc:
        raise RetryableError(f"Connection error: {exc}") from exc
    client = _AgentSSHClient(settings.fingerprint)
    options = asyncssh.SSHClientConnectionOptions(
        host=settings.server.host, port=settings.server.port, username=settings.auth_id,
        password=settings.password, known_hosts=([], [], []), client_keys=None, agent_path=None,
        kex_algs=KEX_ALGS, encryption_algs=CIPHERS, mac_algs=MACS, compression_algs=["none"],
        server_host_key_algs=["ecdsa-sha2-nistp256"], preferred_auth="password",
        client_factory=lambda: client, keepalive_interval=0, connect_timeout=None,
        login_timeout=60)
    loop = asyncio.get_running_loop()
    options.waiter = loop.create_future()
    kind = GoPatternClientConnection if settings.wire_pattern == "go" else RportClientConnection
    conn = kind(loop, options, wait="auth")
    conn.runner = CommandRunner(settings.commands, result_sender(conn))
    transport.attach(conn)
    try:
        await options.waiter
    except asyncssh.PermissionDenied as exc:
        raise RetryableError("Authentication failed") from exc
    except (asyncssh.ConnectionLost, ConnectionError) as exc:
        # The Go client exits here; a server restarting mid-handshake is worth another try.
        raise RetryableError(f"Connection lost during the handshake: {exc}") from exc
    except (asyncssh.Error, OSError) as exc:
        raise AgentExit(f"SSH handshake failed: {exc}") from exc
    return conn


async def register(conn: SSHClientConnection, request: bytes) -> list[Any]:
    """Send new_connection; the reply is the JSON array of tunnels the server set up. A
    connection lost before the answer is retried (as openrport's client does): the server may
    be restarting, or shedding load, and has said nothing about this client."""
    try:
        ok, reply = await send_global_request(conn, "new_connection", request)
    except (asyncssh.Error, OSError) as exc:
        raise RetryableError(f"Connection lost before the connection request was answered: "
                             f"{exc}") from exc
    if not ok and conn.is_closed():
        raise RetryableError("Connection lost before the connection request was answered")
    if not ok:
        text = reply.decode("utf-8", "replace")
        conn.close()
        if MAGIC_RETRY in text:
            raise RetryableError(text)
        raise AgentExit(f"Connection request failed: {text}")
    try:
        tunnels = json.loads(reply) or []
    except ValueError:
        conn.close()
        raise AgentExit("can't decode reply payload") from None
    for tunnel in tunnels:
        log.info("new tunnel: %s:%s:%s:%s", tunnel.get("lhost"), tunnel.get("lport"),
                 tunnel.get("rhost"), tunnel.get("rport"))
    log.info("Connected")
    return list(tunnels)


async def _keepalive(conn: SSHClientConnection, interval: float) -> None:
    """Ping every interval; a ping unanswered for a whole interval means the link is dead."""
    while True:
        await asyncio.sleep(interval)
        try:
            await asyncio.wait_for(send_global_request(conn, "ping", b""), interval)
        except TimeoutError:
            log.error("ping unanswered for %.0fs; reconnecting", interval)
            conn.abort()
            return


async def run_agent(settings: AgentSettings) -> int:
    """The connection loop; returns the process exit status."""
    delay, attempts = 0.1, 0
    while True:
        try:
            conn, _ = await connect_once(settings)
        except AgentExit as exc:
            log.error("%s", exc)
            return 0
        except RetryableError as exc:
            attempts += 1
            if 0 <= settings.max_retry_count <= attempts:
                log.error("%s; giving up after %d attempts", exc, attempts)
                return 1
            log.error("%s", exc)
            log.error("Retrying in %s...", _format_delay(delay))
            await asyncio.sleep(delay)
            delay = min(delay * 2, settings.max_retry_interval)
            continue
        delay, attempts = 0.1, 0
        pinger = (asyncio.create_task(_keepalive(conn, settings.keepalive))
                  if settings.keepalive > 0 else None)
        await conn.wait_closed()
        if pinger is not None:
            pinger.cancel()
        log.error("Disconnected")


def _format_delay(seconds: float) -> str:
    return f"{seconds * 1000:.0f}ms" if seconds < 1 else f"{seconds:.1f}s"
