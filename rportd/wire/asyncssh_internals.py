"""asyncssh adapted to rport-v1; the one module that touches asyncssh's private internals.

rport-v1 needs four things asyncssh has no public call for. Each private name used, and why
(tests/test_library_contracts.py fails loudly when an asyncssh upgrade changes one):

- Banners `SSH-rport-v1-*`: asyncssh only accepts peers announcing `SSH-2.0-`, and the version
  strings enter the key-exchange hash, so they cannot be rewritten on the wire. We override
  `_send_version` / `_recv_version` and use `_inpbuf`, `_send`, `_send_kexinit`,
  `_kexinit_sent`, `_recv_handler`, `_recv_pkthdr`, `_client_version`, `_server_version` and the
  module constants `_MAX_BANNER_LINE_LEN`, `_MAX_VERSION_LINE_LEN`.
- Global requests with raw JSON payloads, and failure replies that carry text (Go puts data
  after REQUEST_FAILURE; the RFC doesn't): asyncssh dispatches a request named N to a method
  `_process_N_global_request`; answers go through `_global_request_queue`,
  `_service_next_global_request` and `send_packet`; our own requests through
  `_make_global_request`, and those that want no reply (cmd_result) `_send_global_request`.
  Classes list their requests in `global_requests` instead.
- Server-opened channels of type `rport` whose extra data is a bare "host:port": opened with
  `SSHTCPChannel._open_forward`, accepted by a method `_process_rport_open` (generated from
  `channel_opens`).
- Connection requests up to `[server] max_request_bytes_client` (512 KiB by default, as
  openrport) arrive as one SSH packet, larger than asyncssh's 256 KiB receive limit
  (`_max_recv_pktlen`, which `_recv_pkthdr` checks): `allow_packets` raises it for a logged-in
  connection (Go's x/crypto/ssh sends packets of any size).
- For benchmarks only, a channel whose flow control looks like the Go client's on the wire
  (`go_window_channel`): golang.org/x/crypto/ssh advertises a 2 MiB window and 32 KiB packets and
  sends a WINDOW_ADJUST after every read of up to 32 KiB (about 32,000 small packets per GiB),
  where asyncssh waits until half the window is used. It overrides `_deliver_data` (where a
  consumed data packet reaches the session), reads `_init_recv_window` / `_recv_window`
  (lowered in `_deliver_data` by 2.17, in `_accept_data` by 2.18+: the difference after delivery
  works with both), uses `_send_chan` and `_loop`, and sends the adjust with `send_packet`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from asyncssh import SSHTCPSession
from asyncssh.channel import SSHTCPChannel
from asyncssh.connection import (
    _MAX_BANNER_LINE_LEN,
    _MAX_VERSION_LINE_LEN,
    SSHConnection,
)
from asyncssh.constants import (
    MSG_CHANNEL_WINDOW_ADJUST,
    MSG_REQUEST_FAILURE,
    MSG_REQUEST_SUCCESS,
)
from asyncssh.misc import ProtocolError, ProtocolNotSupported, map_handler_name
from asyncssh.packet import SSHPacket, UInt32

__all__ = ["SERVER_VERSION", "CLIENT_VERSION", "RportVersionMixin", "reply_global",
           "send_global_request", "send_global_notice", "open_rport_channel", "allow_packets",
           "WINDOW", "MAX_PACKET", "go_window_channel"]

SERVER_VERSION = b"SSH-rport-v1-server"
CLIENT_VERSION = b"SSH-rport-v1-client"
# Go's x/crypto/ssh defaults, which the real client uses; our ends use the same.
WINDOW = 2 * 1024 * 1024
MAX_PACKET = 32 * 1024


def _route_request(method: str) -> Callable[[Any, SSHPacket], None]:
    def handler(self: Any, packet: SSHPacket) -> None:
        getattr(self, method)(bytes(packet.get_remaining_payload()))
    return handler


def _route_open(method: str) -> Callable[[Any, SSHPacket], Any]:
    def handler(self: Any, packet: SSHPacket) -> Any:
        return getattr(self, method)(bytes(packet.get_remaining_payload()))
    return handler


class RportVersionMixin:
    """Mixed into asyncssh connection classes before SSHServerConnection/SSHClientConnection.

    `global_requests` maps a request name to the method that gets its raw payload (and must
    answer it with `reply_global`); `channel_opens` maps a channel type to the method that gets
    its extra data and returns (channel, session) as asyncssh expects."""

    rport_version: bytes = b""
    global_requests: ClassVar[dict[str, str]] = {}
    channel_opens: ClassVar[dict[str, str]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for request, method in cls.global_requests.items():
            setattr(cls, f"_process_{map_handler_name(request)}_global_request",
                    _route_request(method))
        for chantype, method in cls.channel_opens.items():
            setattr(cls, f"_process_{map_handler_name(chantype)}_open", _route_open(method))
    # The agent port writes the server's banner together with the 101 (the server speaks
    # first), before asyncssh exists; asyncssh must then not send it a second time.
    version_already_sent: bool = False

    def _send_version(self: Any) -> None:
        version = self.rport_version
        if self.is_client():
            self._client_version = version
            self.set_extra_info(client_version=version.decode("ascii"))
        else:
            self._server_version = version
            self.set_extra_info(server_version=version.decode("ascii"))
        if not self.version_already_sent:
            self._send(version + b"\r\n")

    def _recv_version(self: Any) -> bool:
        idx = self._inpbuf.find(b"\n", 0, _MAX_BANNER_LINE_LEN)
        if idx < 0:
            if len(self._inpbuf) >= _MAX_BANNER_LINE_LEN:
                self._force_close(ProtocolError("Banner line too long"))
            return False
        version = bytes(self._inpbuf[:idx]).rstrip(b"\r")
        self._inpbuf = self._inpbuf[idx + 1:]
        if not version.startswith(b"SSH-") or len(version) > _MAX_VERSION_LINE_LEN:
            self._force_close(ProtocolNotSupported("Unsupported SSH version"))
            return False
        try:
            text = version.decode("ascii")
        except UnicodeDecodeError:
            self._force_close(ProtocolNotSupported("Unsupported SSH version"))
            return False
        if self.is_server():
            self._client_version = version
            self.set_extra_info(client_version=text)
        else:
            self._server_version = version
            self.set_extra_info(server_version=text)
        self._send_kexinit()
        self._kexinit_sent = True
        self._recv_handler = self._recv_pkthdr
        return True


class _GoWindowTCPChannel(SSHTCPChannel[bytes]):
    """A tunnel channel that gives back its window after every data packet, as Go does."""

    def _deliver_data(self, data: bytes, datatype: Any) -> None:
        super()._deliver_data(data, datatype)
        owed = self._init_recv_window - self._recv_window
        if owed > 0 and self._send_chan is not None:
            self.logger.debug2("Sending Go-pattern window adjust of %d bytes", owed)
            self.send_packet(MSG_CHANNEL_WINDOW_ADJUST, UInt32(owed))
            self._recv_window = self._init_recv_window


def go_window_channel(conn: SSHConnection, window: int, max_pktsize: int) -> SSHTCPChannel[bytes]:
    """A client tunnel channel with the Go client's window-adjust pattern (benchmarks)."""
    return _GoWindowTCPChannel(conn, conn._loop, None, "strict", window, max_pktsize)


def allow_packets(conn: SSHConnection, payload_bytes: int) -> None:
    """Accept packets carrying up to `payload_bytes` of request payload (plus the request name,
    padding and MAC) on `conn`; never lowers asyncssh's own limit."""
    conn._max_recv_pktlen = max(conn._max_recv_pktlen, payload_bytes + 1024)


def reply_global(conn: SSHConnection, ok: bool, payload: bytes = b"") -> None:
    """Answer the global request at the head of asyncssh's queue with raw trailing bytes: JSON on
    success, error text on failure (Go puts data after REQUEST_FAILURE; the RFC doesn't)."""
    queue: list[Any] = conn._global_request_queue
    _, _, want_reply = queue.pop(0)
    if want_reply:
        conn.send_packet(MSG_REQUEST_SUCCESS if ok else MSG_REQUEST_FAILURE, payload)
    if queue:
        conn._service_next_global_request()


def send_global_notice(conn: SSHConnection, name: str, payload: bytes) -> None:
    """Send a global request that wants no reply (the Go client's cmd_result, updates_status)."""
    conn._send_global_request(name.encode("ascii"), payload, want_reply=False)


async def send_global_request(conn: SSHConnection, name: str, payload: bytes) -> tuple[bool, bytes]:
    """Send a want_reply global request with a raw payload; return (success, reply bytes)."""
    pkttype, packet = await conn._make_global_request(name.encode("ascii"), payload)
    return pkttype == MSG_REQUEST_SUCCESS, bytes(packet.get_remaining_payload())


async def open_rport_channel(conn: SSHConnection, target: str,
                             session: SSHTCPSession[bytes]) -> SSHTCPChannel[bytes]:
    """Open a server-side `rport` channel to "host:port" on the agent (no length prefix)."""
    chan: SSHTCPChannel[bytes] = conn.create_tcp_channel(window=WINDOW, max_pktsize=MAX_PACKET)
    await chan._open_forward(lambda: session, b"rport", target.encode("utf-8"))
    return chan
