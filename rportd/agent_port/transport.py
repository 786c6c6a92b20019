"""One accepted agent socket, owned from the first byte: the HTTP upgrade, then WebSocket frames
carrying SSH to asyncssh through a `WebSocketTransport`.

This protocol is the only reader and writer of the socket (aiohttp is not involved), so flow
control has one owner: asyncssh pausing its reads pauses the socket's, and a full socket buffer
toward a slow agent pauses the tunnels feeding it (`WriteGate`).

Memory one connection can make rportd hold, whatever the peer sends: the request head
(`MAX_HEAD`, 8 KiB), one incomplete frame (16 KiB before login; after it 257 KiB or
`max_request_bytes_client` plus 2 KiB, whichever is larger), SSH bytes that arrive before the key
exchange starts (`_MAX_EARLY`, 64 KiB; reading pauses beyond it), plus asyncssh's own buffer of
one packet (256 KiB before login, `max_request_bytes_client` plus 1 KiB after: a connection
request is one packet, which the Go client writes as one frame beyond its first 4 KiB). Toward
the agent: while more than 256 KiB wait to be sent, the socket is not read (and pings are not
answered), so a peer that sends without reading cannot make rportd queue answers without bound.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Callable

from ..wire.websocket import (
    MAX_FRAME_PAYLOAD,
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameParser,
    ProtocolViolation,
    TooLarge,
    WebSocketTransport,
    build_frame,
)
from .upgrade import HEAD_TOO_LARGE, MAX_HEAD, NOT_FOUND, parse_head, switching_protocols

__all__ = ["AgentSocket", "WriteGate", "PRE_AUTH_FRAME"]

log = logging.getLogger("rportd.agent_port")

PRE_AUTH_FRAME = 16 * 1024  # key exchange and login packets are a few hundred bytes
_MAX_EARLY = 64 * 1024
_CLOSE_PROTOCOL, _CLOSE_TOO_BIG = 1002, 1009


class WriteGate:
    """Whether the socket toward the agent has room. Tunnel streams feeding this connection wait
    on it, so a stalled agent makes rportd hold at most the socket's high-water mark."""

    def __init__(self) -> None:
        self._open = asyncio.Event()
        self._open.set()
        self.listeners: set[Callable[[bool], None]] = set()

    @property
    def is_open(self) -> bool:
        return self._open.is_set()

    def set(self, is_open: bool) -> None:
        if is_open == self._open.is_set():
            return
        if is_open:
            self._open.set()
        else:
            self._open.clear()
        for listener in list(self.listeners):
            listener(is_open)


class AgentSocket(asyncio.Protocol):
    """Upgrade, then frames. `version_seen` resolves once the agent's SSH version line is here;
    `crypto_requested` once its third SSH frame is (version line, KEXINIT, then the key-exchange
    packet that makes rportd compute: that frame and later ones are held until the owner has a
    handshake slot and calls `release_held`); `closed` when the socket is gone."""

    def __init__(self, banner: bytes, on_lost: Callable[[], None]):
        loop = asyncio.get_running_loop()
        self._banner = banner
        self._on_lost = on_lost
        self.raw: asyncio.Transport | None = None
        self.ssh: WebSocketTransport | None = None
        self.gate = WriteGate()
        self.version_seen: asyncio.Future[None] = loop.create_future()
        self.crypto_requested: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self._head = bytearray()
        self._parser = FrameParser(expect_masked=True, max_payload=PRE_AUTH_FRAME)
        self._frames = 0
        self._held: list[bytes | bytearray] | None = None  # None: not holding (yet, or any more)
        self._held_bytes = 0
        self._released = False
        self._pauses: set[str] = set()  # why the socket is not being read; empty: reading
        self._budget: int | None = None  # SSH bytes still passed before pausing (None: any)
        self.host = ""  # the upgrade's Host header

    # ------------------------------------------------------------------ asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.raw = transport
        transport.set_write_buffer_limits(high=256 * 1024)

    def data_received(self, data: bytes) -> None:
        if self.ssh is None:
            data = self._read_head(data)
            if not data:
                return
        try:
            frames = self._parser.feed(data)
        except ProtocolViolation as exc:
            self._violation(exc)
            return
        for opcode, payload in frames:
            if self.raw is None or self.raw.is_closing():
                return  # closed by an earlier frame of this read (a violation, a close)
            self._dispatch(opcode, payload)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        for future in (self.version_seen, self.crypto_requested):
            if not future.done():
                future.set_exception(ConnectionResetError("agent hung up"))
                future.exception()  # retrieved: nobody may be waiting any more
        if self.ssh is not None:
            self.ssh.lost(exc)
        self.gate.set(True)
        self._on_lost()

    def pause_writing(self) -> None:
        """The agent is not taking what we send: stop reading from it too, so nothing it sends
        (pings, requests) can make rportd queue answers without bound."""
        self.gate.set(False)
        self._pause("congested")

    def resume_writing(self) -> None:
        self.gate.set(True)
        self._resume("congested")

    def _pause(self, reason: str) -> None:
        if not self._pauses and self.raw is not None and not self.raw.is_closing():
            self.raw.pause_reading()
        self._pauses.add(reason)

    def _resume(self, reason: str) -> None:
        self._pauses.discard(reason)
        if not self._pauses and self.raw is not None and not self.raw.is_closing():
            self.raw.resume_reading()

    # ------------------------------------------------------------------ the upgrade
    def _read_head(self, data: bytes) -> bytes:
        """Collect the request head; answer it; return what followed it (the first frames)."""
        self._head += data
        end = self._head.find(b"\r\n\r\n")
        if end < 0:
            if len(self._head) > MAX_HEAD:
                self._refuse(HEAD_TOO_LARGE)
            return b""
        upgrade = parse_head(bytes(self._head[:end])) if end <= MAX_HEAD else None
        rest = bytes(self._head[end + 4:])
        self._head = bytearray()
        assert self.raw is not None
        if upgrade is None:
            self._refuse(NOT_FOUND if end <= MAX_HEAD else HEAD_TOO_LARGE)
            return b""
        self.host = upgrade.host
        self.raw.write(switching_protocols(upgrade, self._banner))
        self.ssh = WebSocketTransport(self.raw, mask=False, reading=(
            lambda: self._pause("ssh"), lambda: self._resume("ssh")))
        return rest

    def _refuse(self, answer: bytes) -> None:
        assert self.raw is not None
        self.raw.write(answer)
        self.raw.close()

    # ------------------------------------------------------------------ frames
    def _dispatch(self, opcode: int, payload: bytes | bytearray) -> None:
        assert self.ssh is not None and self.raw is not None
        if opcode in (OP_BINARY, OP_TEXT, OP_CONT):
            self._ssh_bytes(payload)
        elif opcode == OP_PING:
            if self.gate.is_open:  # RFC 6455 5.5.3: answering only the latest ping is enough
                self.raw.write(build_frame(payload, OP_PONG, mask=False))
        elif opcode == OP_CLOSE:
            self.ssh.close()
        elif opcode != OP_PONG:
            self._violation(ProtocolViolation(f"unknown opcode {opcode}"))

    def _ssh_bytes(self, payload: bytes | bytearray) -> None:
        assert self.ssh is not None
        if not self._released:
            self._frames += 1
            if not self.version_seen.done() and b"\n" in payload:
                self.version_seen.set_result(None)
            if self._frames >= 3 or self._held is not None:
                self._hold(payload)
                return
        if self._budget is not None:
            self._budget -= len(payload)
            if self._budget < 0:
                self._pause("budget")
        self.ssh.feed(payload)

    def _hold(self, payload: bytes | bytearray) -> None:
        assert self.raw is not None
        if self._held is None:
            self._held = []
            self.crypto_requested.set_result(None)
        self._held.append(payload)
        self._held_bytes += len(payload)
        if self._held_bytes > _MAX_EARLY:
            self._pause("held")  # resumed by release_held

    def release_held(self) -> None:
        """The owner holds a handshake slot: let the key exchange's computing part in."""
        assert self.ssh is not None and self.raw is not None
        held, self._held, self._released = self._held or [], None, True
        for payload in held:
            self.ssh.feed(payload)
        self._resume("held")

    def _violation(self, exc: ProtocolViolation) -> None:
        """RFC 6455 7.4: close with 1009 for a frame too big, 1002 for any other violation."""
        assert self.raw is not None
        code = _CLOSE_TOO_BIG if isinstance(exc, TooLarge) else _CLOSE_PROTOCOL
        log.info("agent %s: %s; closing", self.peer, exc)
        if not self.raw.is_closing():
            self.raw.write(build_frame(struct.pack("!H", code), OP_CLOSE, mask=False))
            self.raw.close()

    # ------------------------------------------------------------------ for the owner
    @property
    def peer(self) -> str:
        name = self.raw.get_extra_info("peername") if self.raw is not None else None
        return str(name[0]) if name else ""

    def budget_reading(self, budget: int | None) -> None:
        """Pass at most `budget` more SSH bytes, then stop reading until called with None. A
        peer that sends nothing meanwhile is still read, so its hang-up is noticed."""
        self._budget = budget
        if budget is None:
            self._resume("budget")

    def logged_in(self, max_request: int) -> None:
        """After authentication, frames may carry any packet SSH allows, and a request of up to
        `max_request` bytes (one packet, so one frame) with its SSH framing."""
        self._parser.max_payload = max(MAX_FRAME_PAYLOAD, max_request + 2048)

    def abort(self) -> None:
        if self.raw is not None:
            self.raw.abort()
