"""A TCP socket joined to an SSH channel with rport's semantics: when either side ends, both close.

Flow control runs end to end: a full socket pauses the channel, a full channel (peer window
exhausted, or the SSH connection itself paused) pauses the socket, so neither side buffers more
than the SSH window plus the transports' high-water marks. A socket that stays unwritable for
`write_deadline` seconds (a peer that stopped reading) is aborted, and so is one still flushing
that long after a close: from Python 3.12 `Server.wait_closed()` waits for such sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from typing import Any

from asyncssh import SSHTCPChannel, SSHTCPSession

__all__ = ["Pipe", "TrafficMeter", "WRITE_DEADLINE"]

WRITE_DEADLINE = 30.0


class TrafficMeter:
    """Bytes moved by tunnel streams, so other work can yield to them (api/app.py)."""

    def __init__(self) -> None:
        self.moved = 0
        self._sample = (0.0, 0)
        self._busy = False

    def busy(self, now: float, window: float = 0.2, threshold: int = 1 << 20) -> bool:
        """Whether more than `threshold` bytes moved in about the last `window` seconds."""
        then, moved = self._sample
        if now - then >= window:
            self._busy = self.moved - moved > threshold * (now - then) / window
            self._sample = (now, self.moved)
        return self._busy


class Pipe:
    """Owns one tunnel stream. `socket_protocol()` is the asyncio protocol for the TCP side,
    `channel_session()` the asyncssh session for the channel side."""

    def __init__(self, meter: TrafficMeter | None = None,
                 write_deadline: float = WRITE_DEADLINE) -> None:
        self.meter = meter or TrafficMeter()
        self.transport: asyncio.Transport | None = None
        self.channel: SSHTCPChannel[bytes] | None = None
        self.write_deadline = write_deadline
        self._loop = asyncio.get_running_loop()
        self.connected: asyncio.Future[None] = self._loop.create_future()  # the socket side is up
        self.closed: asyncio.Future[None] = self._loop.create_future()
        self._deadline: asyncio.TimerHandle | None = None
        # Why the socket must not be read now: "opening" (no channel yet), "channel" (the
        # channel's send buffer is above its high-water mark), "connection" (the agent's whole
        # connection cannot take more). Reading resumes only when no reason is left.
        self._read_blocks: set[str] = {"opening"}

    def socket_protocol(self) -> asyncio.Protocol:
        return _SocketEnd(self)

    def channel_session(self) -> SSHTCPSession[bytes]:
        return _ChannelEnd(self)

    def block_reading(self, reason: str) -> None:
        self._read_blocks.add(reason)
        self.apply_reading()

    def unblock_reading(self, reason: str) -> None:
        self._read_blocks.discard(reason)
        self.apply_reading()

    def apply_reading(self) -> None:
        """Pause or resume the socket's reading to match the blocks."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self._read_blocks and transport.is_reading():
            transport.pause_reading()
        elif not self._read_blocks and not transport.is_reading():
            transport.resume_reading()

    def close(self) -> None:
        """End both sides, letting the socket flush what it holds, within the write deadline."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
            if self.transport.get_write_buffer_size():
                self.start_deadline()
        self._finish()

    def abort(self) -> None:
        """End both sides at once, dropping unsent bytes (tunnel deleted, agent gone)."""
        if self.transport is not None:
            _reset(self.transport)
        self._finish()

    def _finish(self) -> None:
        if self.channel is not None:
            self.channel.close()
        if not self.closed.done():
            self.closed.set_result(None)

    def start_deadline(self) -> None:
        """The socket cannot take more bytes: abort it unless it drains within the deadline."""
        if self._deadline is None:
            self._deadline = self._loop.call_later(self.write_deadline, self._overdue)

    def stop_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _overdue(self) -> None:
        self._deadline = None
        self.abort()


def _reset(transport: asyncio.Transport) -> None:
    """Abort with a TCP reset: a plain close would leave the kernel still trying to deliver the
    unread bytes to a peer that never reads, holding the socket's memory meanwhile."""
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


class _SocketEnd(asyncio.Protocol):
    def __init__(self, pipe: Pipe):
        self._pipe = pipe

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._pipe.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._pipe.apply_reading()  # paused while any block is left (usually "opening")
        if not self._pipe.connected.done():
            self._pipe.connected.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self._pipe.channel is not None:
            self._pipe.meter.moved += len(data)
            self._pipe.channel.write(data)

    def eof_received(self) -> bool:
        self._pipe.close()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._pipe.stop_deadline()
        self._pipe.close()

    def pause_writing(self) -> None:
        self._pipe.start_deadline()
        if self._pipe.channel is not None:
            self._pipe.channel.pause_reading()

    def resume_writing(self) -> None:
        self._pipe.stop_deadline()
        if self._pipe.channel is not None:
            self._pipe.channel.resume_reading()


class _ChannelEnd(SSHTCPSession[bytes]):
    def __init__(self, pipe: Pipe):
        self._pipe = pipe

    def connection_made(self, chan: Any) -> None:
        self._pipe.channel = chan

    def session_started(self) -> None:
        self._pipe.unblock_reading("opening")

    def data_received(self, data: bytes, datatype: Any) -> None:
        if self._pipe.transport is not None:
            self._pipe.meter.moved += len(data)
            self._pipe.transport.write(data)

    def eof_received(self) -> bool:
        self._pipe.close()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._pipe.close()

    def pause_writing(self) -> None:
        self._pipe.block_reading("channel")

    def resume_writing(self) -> None:
        self._pipe.unblock_reading("channel")
