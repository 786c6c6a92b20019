"""Byte-level compatibility with the real rport client and server (protocol/rport-v1.md)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from .processes import Rportd

GO_CLIENT_REQUEST = (
    "GET / HTTP/1.1\r\n"
    "Host: 127.0.0.1:{port}\r\n"
    "User-Agent: rport 0.0.0-src\r\n"
    "Connection: Upgrade\r\n"
    "Sec-WebSocket-Key: htj4i88AD93HXU9IbTCJQA==\r\n"
    "Sec-WebSocket-Protocol: rport-v1\r\n"
    "Sec-WebSocket-Version: 13\r\n"
    "Upgrade: websocket\r\n"
    "\r\n")


@pytest.fixture
def rportd(tmp_path: Path) -> Iterator[Rportd]:
    server = Rportd(tmp_path, {"server": {"auth": "c1:secret"}}).start()
    yield server
    server.stop()


async def test_go_clients_exact_upgrade_gets_101_then_the_banner_frame(rportd: Rportd) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", rportd.agent_port)
    writer.write(GO_CLIENT_REQUEST.format(port=rportd.agent_port).encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    accept = base64.b64encode(hashlib.sha1(
        b"htj4i88AD93HXU9IbTCJQA==258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
    assert b"Sec-WebSocket-Accept: " + accept in head
    frame = await asyncio.wait_for(reader.readexactly(23), 5)
    assert frame == b"\x82\x15SSH-rport-v1-server\r\n"
    writer.close()


def _capture_upgrade(*flags: str) -> tuple[list[str], int]:
    """A listener that records the request our agent sends first; its lines and the port."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    captured: list[bytes] = []

    def capture() -> None:
        conn, _ = listener.accept()
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
            captured.append(data)

    thread = threading.Thread(target=capture, daemon=True)
    thread.start()
    agent = subprocess.Popen([sys.executable, "-m", "rportd.client.cli", "--auth", "a:b",
                              "--allow-root", "--max-retry-count", "1", *flags,
                              f"127.0.0.1:{port}"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env={k: v for k, v in os.environ.items()})
    try:
        thread.join(15)
    finally:
        agent.kill()
        agent.wait()
        listener.close()
    return captured[0].decode().split("\r\n"), port


def test_our_agent_sends_the_go_clients_request_bytes() -> None:
    """Compared line by line with the request the Go client sends (only the key, the port and
    the version differ)."""
    ours, port = _capture_upgrade()
    theirs = GO_CLIENT_REQUEST.format(port=port).split("\r\n")
    assert len(ours) == len(theirs)
    for mine, go in zip(ours, theirs, strict=True):
        if go.startswith(("User-Agent:", "Sec-WebSocket-Key:")):
            assert mine.split(":")[0] == go.split(":")[0]
            assert len(base64.b64decode(mine.split(": ")[1])) == 16 if "Key" in go else True
        else:
            assert mine == go
    assert ours[2].startswith("User-Agent: rport ")


def test_header_and_hostname_reach_the_upgrade_as_the_go_client_writes_them() -> None:
    """--hostname becomes Host; --header names are canonicalised, a later one of the same name
    wins, a User-Agent header replaces the client's, and the rest is sorted by name (net/http)."""
    ours, _ = _capture_upgrade("--hostname", "rport.example.com:443",
                               "--header", "x-forwarded-for: 192.0.2.7",
                               "--header", "Authorization: Basic dXNlcjpwYXNz",
                               "--header", "X-Forwarded-For: 198.51.100.9",
                               "--header", "User-Agent: test1")
    key = ours[5].split(": ")[1]
    assert ours == ["GET / HTTP/1.1", "Host: rport.example.com:443", "User-Agent: test1",
                    "Authorization: Basic dXNlcjpwYXNz", "Connection: Upgrade",
                    f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Protocol: rport-v1",
                    "Sec-WebSocket-Version: 13", "Upgrade: websocket",
                    "X-Forwarded-For: 198.51.100.9", "", ""]
