"""SSH over a WebSocket: frame codec and the asyncio Transport that asyncssh runs on.

rport-v1 carries one SSH byte stream inside a WebSocket: every write is one binary message, and
reads ignore message boundaries. `WebSocketTransport` gives asyncssh an ordinary Transport whose
writes become frames on the raw socket (no copy beyond the frame header for the server, one masking
pass for the client) and whose flow control reaches the raw socket in both directions.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import struct
from collections.abc import Callable
from typing import Any

from .aiohttp_internals import websocket_mask

__all__ = ["WebSocketTransport", "FrameParser", "frame_header", "accept_key", "OP_BINARY",
           "OP_CLOSE", "OP_PING", "OP_PONG", "OP_TEXT", "OP_CONT", "ProtocolViolation", "build_frame",
           "build_frame_parts", "MAX_FRAME_PAYLOAD", "TooLarge"]

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
# rport-v1 sends one SSH packet per frame. The largest packet either side accepts is 256 KiB
# (asyncssh's and Go's limit) plus length, padding and MAC: anything larger is not rport.
MAX_FRAME_PAYLOAD = 256 * 1024 + 1024
_MAX_CONTROL = 125


class ProtocolViolation(Exception):
    """The peer sent bytes that are not a WebSocket frame we accept."""


class TooLarge(ProtocolViolation):
    """A frame announced more bytes than the parser's limit (closed with 1009)."""


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()


def frame_header(length: int, opcode: int = OP_BINARY, mask: bytes = b"") -> bytes:
    mask_bit = 0x80 if mask else 0
    first = 0x80 | opcode
    if length < 126:
        return struct.pack("!BB", first, mask_bit | length) + mask
    if length < 65536:
        return struct.pack("!BBH", first, mask_bit | 126, length) + mask
    return struct.pack("!BBQ", first, mask_bit | 127, length) + mask


def build_frame_parts(payload: bytes | bytearray | memoryview, opcode: int, *,
                      mask: bool) -> tuple[bytes, bytes | bytearray | memoryview]:
    """Header and body of a frame; clients mask with a fresh random key (RFC 6455 5.3)."""
    if not mask:
        return frame_header(len(payload), opcode), payload
    key = os.urandom(4)
    body = bytearray(payload)
    websocket_mask(key, body)
    return frame_header(len(body), opcode, key), body


def build_frame(payload: bytes | bytearray | memoryview, opcode: int, *, mask: bool) -> bytes:
    header, body = build_frame_parts(payload, opcode, mask=mask)
    return header + bytes(body)


class FrameParser:
    """Incremental parser: feed raw bytes, get (opcode, payload) for each complete frame.

    A frame is refused from its header, before its payload is buffered, when it announces more
    than `max_payload` bytes; so one connection never makes it hold more than that. Clients must
    mask and servers must not (RFC 6455 5.1); control frames are short and unfragmented (5.5).
    """

    def __init__(self, expect_masked: bool, max_payload: int = MAX_FRAME_PAYLOAD):
        self._buf = bytearray()
        self._expect_masked = expect_masked
        self.max_payload = max_payload

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[tuple[int, bytes | bytearray]]:
        """Complete frames in `data` (after what was buffered); the rest is kept. Frames are cut
        from one buffer by offset, and a segment holding only whole frames is never copied."""
        if self._buf:
            self._buf += data
            buf: bytes | bytearray = self._buf
        else:
            buf = data
        frames: list[tuple[int, bytes | bytearray]] = []
        offset = 0
        try:
            while True:
                frame = self._next(buf, offset)
                if frame is None:
                    break
                offset, opcode, payload = frame
                frames.append((opcode, payload))
        finally:
            self._keep(buf, offset)
        return frames

    def _keep(self, buf: bytes | bytearray, offset: int) -> None:
        if buf is self._buf:
            del self._buf[:offset]
        else:
            self._buf = bytearray(buf[offset:])

    def _header(self, buf: bytes | bytearray, offset: int) -> tuple[int, int, int, bool] | None:
        """(opcode, payload length, payload start, masked), or None until the header is in."""
        available = len(buf) - offset
        if available < 2:
            return None
        first, second = buf[offset], buf[offset + 1]
        if first & 0x70:
            raise ProtocolViolation("reserved bits set")
        masked, length, pos = bool(second & 0x80), second & 0x7F, 2
        if masked != self._expect_masked:
            raise ProtocolViolation("masked frame" if masked else "unmasked client frame")
        if length == 126:
            if available < 4:
                return None
            (length,), pos = struct.unpack_from("!H", buf, offset + 2), 4
        elif length == 127:
            if available < 10:
                return None
            (length,), pos = struct.unpack_from("!Q", buf, offset + 2), 10
        opcode = first & 0x0F
        if opcode >= 0x8 and (length > _MAX_CONTROL or not first & 0x80):
            raise ProtocolViolation("control frame too long or fragmented")
        if length > self.max_payload:
            raise TooLarge(f"frame of {length} bytes is over the {self.max_payload}-byte limit")
        return opcode, length, offset + pos + (4 if masked else 0), masked

    def _next(self, buf: bytes | bytearray,
              offset: int) -> tuple[int, int, bytes | bytearray] | None:
        header = self._header(buf, offset)
        if header is None:
            return None
        opcode, length, start, masked = header
        end = start + length
        if len(buf) < end:
            return None
        if masked:
            payload = bytearray(buf[start:end])
            websocket_mask(bytes(buf[start - 4:start]), payload)
            return end, opcode, payload  # unmasked in place: no second copy
        return end, opcode, bytes(buf[start:end])


class WebSocketTransport(asyncio.Transport):
    """The Transport asyncssh sees. Writes go out as binary frames on `raw`; the owner feeds
    received payloads through `feed`. `mask` is True on the client side (RFC 6455)."""

    def __init__(self, raw: asyncio.Transport, *, mask: bool, extra: dict[str, Any] | None = None,
                 reading: tuple[Callable[[], None], Callable[[], None]] | None = None):
        """`reading`: (pause, resume) to call instead of the raw transport's, for an owner that
        has reasons of its own to pause the socket."""
        super().__init__(extra)
        self._raw = raw
        self._reading = reading
        self._mask = mask
        self._protocol: asyncio.Protocol | None = None
        self._early: list[bytes | bytearray] = []  # bytes that arrived before attach() (bounded by the owner)
        self._closing = False
        self._reading_paused = False
        self._resume_reading = asyncio.Event()
        self._resume_reading.set()

    # -- wiring
    @property
    def attached(self) -> bool:
        return self._protocol is not None

    def attach(self, protocol: asyncio.Protocol) -> None:
        self._protocol = protocol
        protocol.connection_made(self)
        early, self._early = self._early, []
        for data in early:
            self.feed(data)
        if (self._reading is None and not self._reading_paused and not self._raw.is_closing()
                and not self._raw.is_reading()):
            self._raw.resume_reading()  # the owner paused it while early bytes piled up

    def feed(self, data: bytes | bytearray) -> None:
        if not data:
            return
        if self._protocol is None:
            self._early.append(data)  # the peer's banner may share a segment with the 101
        else:
            self._protocol.data_received(data)  # type: ignore[arg-type]  # asyncssh takes any bytes-like

    def lost(self, exc: Exception | None) -> None:
        self._closing = True
        if self._protocol is not None:
            protocol, self._protocol = self._protocol, None
            protocol.connection_lost(exc)

    async def reading_allowed(self) -> None:
        """The owner's read loop awaits this so a paused SSH connection stops socket reads."""
        await self._resume_reading.wait()

    # -- asyncio.Transport
    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "socket":
            return None  # asyncssh would set socket options on it; the raw side owns those
        value = super().get_extra_info(name, None)
        return value if value is not None else self._raw.get_extra_info(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """One frame per write, as rport does. (Coalescing a loop turn's writes into one frame
        was measured slower: bigger frames stall the reader until they are complete.)"""
        if self._closing or self._raw.is_closing():
            return
        self._raw.writelines(build_frame_parts(data, OP_BINARY, mask=self._mask))

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def can_write_eof(self) -> bool:
        return False

    def is_closing(self) -> bool:
        return self._closing or self._raw.is_closing()

    def close(self) -> None:
        if not self._closing:
            self._closing = True
            if not self._raw.is_closing():
                self._raw.write(build_frame(struct.pack("!H", 1000), OP_CLOSE, mask=self._mask))
                self._raw.close()

    def abort(self) -> None:
        self._closing = True
        self._raw.abort()

    def pause_reading(self) -> None:
        self._reading_paused = True
        self._resume_reading.clear()
        if self._reading is not None:
            self._reading[0]()
        else:
            self._raw.pause_reading()

    def resume_reading(self) -> None:
        self._reading_paused = False
        self._resume_reading.set()
        if self._reading is not None:
            self._reading[1]()
        else:
            self._raw.resume_reading()

    def is_reading(self) -> bool:
        return not self._reading_paused

    def get_write_buffer_size(self) -> int:
        return self._raw.get_write_buffer_size()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._raw.set_write_buffer_limits(high, low)

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self._protocol is not None
        return self._protocol

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol  # type: ignore[assignment]
