"""asyncssh adapted to rport-v1: the `SSH-rport-v1-*` banners, raw-JSON global requests, and
server-opened `rport` channels whose extra data is a bare "host:port".

asyncssh only accepts peers announcing `SSH-2.0-`; the identification strings enter the key
exchange hash, so they cannot be rewritten on the wire. `RportVersionMixin` sends our banner
and accepts any line starting `SSH-`, as Go's x/crypto/ssh does.
"""

from __future__ import annotations

from typing import Any

from asyncssh import SSHTCPSession
from asyncssh.channel import SSHTCPChannel
from asyncssh.connection import (
    _MAX_BANNER_LINE_LEN,
    _MAX_VERSION_LINE_LEN,
    SSHConnection,
)
from asyncssh.constants import MSG_REQUEST_FAILURE, MSG_REQUEST_SUCCESS
from asyncssh.misc import ProtocolError, ProtocolNotSupported

__all__ = ["SERVER_VERSION", "CLIENT_VERSION", "RportVersionMixin", "reply_global",
           "send_global_request", "open_rport_channel", "WINDOW", "MAX_PACKET"]

SERVER_VERSION = b"SSH-rport-v1-server"
CLIENT_VERSION = b"SSH-rport-v1-client"
# Go's x/crypto/ssh defaults, which the real client uses; our ends use the same.
WINDOW = 2 * 1024 * 1024
MAX_PACKET = 32 * 1024


class RportVersionMixin:
    """Mixed into asyncssh connection classes before SSHServerConnection/SSHClientConnection."""

    rport_version: bytes = b""
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


def reply_global(conn: SSHConnection, ok: bool, payload: bytes = b"") -> None:
    """Answer the global request at the head of asyncssh's queue with raw trailing bytes: JSON on
    success, error text on failure (Go puts data after REQUEST_FAILURE; the RFC doesn't)."""
    queue: list[Any] = conn._global_request_queue
    _, _, want_reply = queue.pop(0)
    if want_reply:
        conn.send_packet(MSG_REQUEST_SUCCESS if ok else MSG_REQUEST_FAILURE, payload)
    if queue:
        conn._service_next_global_request()


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
