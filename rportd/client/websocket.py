"""The agent's WebSocket client: the rport client's exact upgrade request, then binary frames."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..wire.websocket import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameParser,
    ProtocolViolation,
    WebSocketTransport,
    accept_key,
    build_frame,
)

__all__ = ["ServerAddress", "parse_server", "connect_websocket", "HandshakeRefused",
           "GoFramedTransport", "GO_WRITE_BUFFER"]

_MAX_RESPONSE_HEAD = 16 * 1024
GO_WRITE_BUFFER = 4096  # x/crypto/ssh writes through a bufio.Writer of this size


class GoFramedTransport(WebSocketTransport):
    """Frames as the Go client cuts them: each SSH packet goes through a 4 KiB bufio.Writer
    (length prefix first, then the sealed rest), and each write reaching the socket is one
    frame, so a packet over 4 KiB arrives as a 4 KiB frame and a frame with the rest."""

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if len(data) <= GO_WRITE_BUFFER:
            super().write(data)
            return
        view = memoryview(data)
        super().write(view[:GO_WRITE_BUFFER])
        super().write(view[GO_WRITE_BUFFER:])


class HandshakeRefused(ConnectionError):
    """The server did not switch protocols (wrong path, not an rport server, ...)."""


@dataclass(frozen=True)
class ServerAddress:
    host: str
    port: int
    path: str
    tls: bool

    @property
    def url(self) -> str:
        return f"{'wss' if self.tls else 'ws'}://{self.host_header}{self.path}"

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_server(text: str) -> ServerAddress:
    """Accept "host:port", "http://host:port/path", "ws://...", "https://..." or "wss://..."."""
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https", "ws", "wss") or not parts.hostname:
        raise ValueError(f"server {text!r} must look like host:port or http://host:port")
    tls = parts.scheme in ("https", "wss")
    port = parts.port or (443 if tls else 80)
    return ServerAddress(parts.hostname, port, parts.path or "/", tls)


class _ClientProtocol(asyncio.Protocol):
    def __init__(self, server: ServerAddress, user_agent: str, go_frames: bool = False):
        self._server = server
        self._go_frames = go_frames
        self._user_agent = user_agent
        self._key = base64.b64encode(os.urandom(16)).decode()
        self._head = b""
        self._parser = FrameParser(expect_masked=False)
        self.upgraded: asyncio.Future[WebSocketTransport] = (
            asyncio.get_running_loop().create_future())
        self._ws: WebSocketTransport | None = None
        self._raw: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._raw = transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # Byte for byte the request the Go client sends (gorilla/websocket header order).
        transport.write((
            f"GET {self._server.path} HTTP/1.1\r\n"
            f"Host: {self._server.host_header}\r\n"
            f"User-Agent: {self._user_agent}\r\n"
            "Connection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {self._key}\r\n"
            "Sec-WebSocket-Protocol: rport-v1\r\n"
            "Sec-WebSocket-Version: 13\r\n"
            "Upgrade: websocket\r\n\r\n").encode())

    def data_received(self, data: bytes) -> None:
        if self._ws is None:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                if len(self._head) > _MAX_RESPONSE_HEAD:
                    self._fail(HandshakeRefused("oversized handshake response"))
                return
            head, rest = self._head[:end].decode("latin-1"), self._head[end + 4:]
            if not self._accept(head):
                return
            data = rest
        try:
            frames = self._parser.feed(data)
        except ProtocolViolation as exc:
            self._fail(exc)
            return
        for opcode, payload in frames:
            self._dispatch(opcode, payload)

    def _accept(self, head: str) -> bool:
        lines = head.split("\r\n")
        status = lines[0].split(" ", 2)
        headers = {k.strip().lower(): v.strip() for k, _, v in
                   (line.partition(":") for line in lines[1:])}
        if len(status) < 2 or status[1] != "101":
            self._fail(HandshakeRefused(f"websocket: bad handshake ({lines[0]})"))
            return False
        if headers.get("sec-websocket-accept") != accept_key(self._key):
            self._fail(HandshakeRefused("websocket: bad Sec-WebSocket-Accept"))
            return False
        assert self._raw is not None
        kind = GoFramedTransport if self._go_frames else WebSocketTransport
        self._ws = kind(self._raw, mask=True)
        self.upgraded.set_result(self._ws)
        return True

    def _dispatch(self, opcode: int, payload: bytes | bytearray) -> None:
        assert self._ws is not None and self._raw is not None
        if opcode in (OP_BINARY, OP_TEXT, OP_CONT):
            self._ws.feed(payload)
        elif opcode == OP_PING:
            self._raw.write(build_frame(payload, OP_PONG, mask=True))
        elif opcode == OP_CLOSE:
            self._raw.close()

    def _fail(self, exc: Exception) -> None:
        if not self.upgraded.done():
            self.upgraded.set_exception(exc)
        if self._raw is not None:
            self._raw.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.upgraded.done():
            self.upgraded.set_exception(exc or ConnectionResetError("connection closed"))
        if self._ws is not None:
            self._ws.lost(exc)

    def pause_writing(self) -> None:
        if self._ws is not None:
            protocol = self._ws.get_protocol()
            if isinstance(protocol, asyncio.Protocol):
                protocol.pause_writing()

    def resume_writing(self) -> None:
        if self._ws is not None:
            protocol = self._ws.get_protocol()
            if isinstance(protocol, asyncio.Protocol):
                protocol.resume_writing()


async def connect_websocket(server: ServerAddress, user_agent: str, timeout: float = 45.0,
                            source_address: str = "", go_frames: bool = False
                            ) -> WebSocketTransport:
    """Dial (from `source_address` when given), upgrade with `Sec-WebSocket-Protocol: rport-v1`,
    return the SSH-ready transport (cutting frames as the Go client does with `go_frames`)."""
    loop = asyncio.get_running_loop()
    context = ssl.create_default_context() if server.tls else None
    local = (source_address, 0) if source_address else None

    async def dial() -> WebSocketTransport:
        _, protocol = await loop.create_connection(
            lambda: _ClientProtocol(server, user_agent, go_frames), server.host, server.port, ssl=context,
            local_addr=local)
        return await protocol.upgraded

    return await asyncio.wait_for(dial(), timeout)
