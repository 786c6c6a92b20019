"""The agent's WebSocket client: the rport client's exact upgrade request (with its extra headers),
optionally through an HTTP CONNECT proxy, then binary frames."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

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

__all__ = ["ServerAddress", "ProxyAddress", "parse_server", "parse_proxy", "upgrade_request",
           "connect_websocket", "HandshakeRefused", "GoFramedTransport", "GO_WRITE_BUFFER"]

_MAX_RESPONSE_HEAD = 16 * 1024
# net/http leaves these out of a request it writes; gorilla/websocket refuses the rest, which
# are the upgrade's own ("websocket: duplicate header not allowed").
_DROPPED = {"Content-Length", "Transfer-Encoding", "Trailer"}
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


@dataclass(frozen=True)
class ProxyAddress:
    """An HTTP CONNECT proxy; the credentials go in Proxy-Authorization, never in a log."""

    host: str
    port: int
    username: str = ""
    password: str = field(default="", repr=False)

    @property
    def display(self) -> str:
        return f"http://{self.host}:{self.port}"


def parse_proxy(text: str) -> ProxyAddress:
    """`http://[user:password@]host[:port]` (port 80 by default, as the Go client's dialer)."""
    parts = urlsplit(text if "://" in text else "http://" + text)
    if parts.scheme != "http" or not parts.hostname:
        shown = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()  # no password
        raise ValueError(f"proxy {shown!r} must be an HTTP CONNECT proxy, "
                         "http://[user:password@]host:port (SOCKS is not supported)")
    return ProxyAddress(parts.hostname, parts.port or 80, unquote(parts.username or ""),
                        unquote(parts.password or ""))


def upgrade_request(server: ServerAddress, key: str, user_agent: str,
                    headers: Mapping[str, str] | None = None) -> bytes:
    """The Go client's request: Host and User-Agent first (--hostname and a User-Agent header
    replace them), then every other header sorted by name, as net/http writes them."""
    extra = dict(headers or {})
    host = extra.pop("Host", "") or server.host_header
    agent = extra.pop("User-Agent", "") or user_agent
    fields = {"Connection": "Upgrade", "Sec-WebSocket-Key": key,
              "Sec-WebSocket-Protocol": "rport-v1", "Sec-WebSocket-Version": "13",
              "Upgrade": "websocket"}
    fields.update((k, v) for k, v in extra.items() if k not in _DROPPED)
    lines = [f"GET {server.path} HTTP/1.1", f"Host: {host}", f"User-Agent: {agent}"]
    lines += [f"{name}: {fields[name]}" for name in sorted(fields)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


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
    def __init__(self, server: ServerAddress, user_agent: str,
                 headers: Mapping[str, str] | None = None, go_frames: bool = False):
        self._server = server
        self._go_frames = go_frames
        self._user_agent = user_agent
        self._headers = headers
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
        transport.write(upgrade_request(self._server, self._key, self._user_agent, self._headers))

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


async def _read_proxy_answer(sock: socket.socket) -> None:
    """Read the proxy's answer head; 200 opens the tunnel. Nothing may follow it: the server
    speaks only after our request, so extra bytes mean this is no CONNECT proxy."""
    loop = asyncio.get_running_loop()
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = await loop.sock_recv(sock, 4096)
        if not chunk:
            raise HandshakeRefused("proxy: connection closed before its answer")
        head += chunk
        if len(head) > _MAX_RESPONSE_HEAD:
            raise HandshakeRefused("proxy: oversized answer")
    status, _, rest = head.partition(b"\r\n\r\n")
    words = status.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 1)
    if len(words) < 2 or not words[1].startswith("200"):
        raise HandshakeRefused(f"proxy: {words[-1] if len(words) > 1 else 'bad answer'}")
    if rest:
        raise HandshakeRefused("proxy: sent data after its answer")


async def _through_proxy(proxy: ProxyAddress, server: ServerAddress,
                         local: tuple[str, int] | None) -> socket.socket:
    """A socket connected through `CONNECT host:port`, as the Go client's proxy dialer asks."""
    loop = asyncio.get_running_loop()
    family, kind, proto, _, address = (await loop.getaddrinfo(
        proxy.host, proxy.port, type=socket.SOCK_STREAM))[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setblocking(False)
        if local:
            sock.bind(local)
        await loop.sock_connect(sock, address)
        target = server.host_header
        lines = [f"CONNECT {target} HTTP/1.1", f"Host: {target}", "User-Agent: Go-http-client/1.1"]
        if proxy.username or proxy.password:
            token = base64.b64encode(f"{proxy.username}:{proxy.password}".encode()).decode()
            lines.append(f"Proxy-Authorization: Basic {token}")
        await loop.sock_sendall(sock, ("\r\n".join(lines) + "\r\n\r\n").encode())
        await _read_proxy_answer(sock)
    except BaseException:
        sock.close()
        raise
    return sock


async def connect_websocket(server: ServerAddress, user_agent: str, timeout: float = 45.0,
                            source_address: str = "", proxy: ProxyAddress | None = None,
                            headers: Mapping[str, str] | None = None, go_frames: bool = False
                            ) -> WebSocketTransport:
    """Dial (from `source_address` when given; through `proxy` when given), upgrade with
    `Sec-WebSocket-Protocol: rport-v1` and `headers`, return the SSH-ready transport (cutting
    frames as the Go client does with `go_frames`)."""
    loop = asyncio.get_running_loop()
    context = ssl.create_default_context() if server.tls else None
    local = (source_address, 0) if source_address else None

    def factory() -> _ClientProtocol:
        return _ClientProtocol(server, user_agent, headers, go_frames)

    async def dial() -> WebSocketTransport:
        if proxy is None:
            _, protocol = await loop.create_connection(factory, server.host, server.port,
                                                       ssl=context, local_addr=local)
        else:
            sock = await _through_proxy(proxy, server, local)
            try:
                _, protocol = await loop.create_connection(
                    factory, sock=sock, ssl=context,
                    server_hostname=server.host if context else None)
            except BaseException:
                sock.close()
                raise
        return await protocol.upgraded

    return await asyncio.wait_for(dial(), timeout)
