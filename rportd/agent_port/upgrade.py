"""The HTTP side of the agent port: read one request head, answer 101 for an rport-v1 WebSocket
upgrade (on any path, as rport does) and an empty 404 for anything else."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..wire.websocket import OP_BINARY, accept_key, frame_header

__all__ = ["MAX_HEAD", "Upgrade", "parse_head", "switching_protocols", "NOT_FOUND",
           "HEAD_TOO_LARGE"]

log = logging.getLogger("rportd.agent_port")

MAX_HEAD = 8192  # the Go client's request is about 250 bytes
NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
HEAD_TOO_LARGE = (b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\n"
                  b"Connection: close\r\n\r\n")


@dataclass(frozen=True)
class Upgrade:
    key: str
    path: str
    host: str = ""  # the Host header: with [api] tenant_domain, it may name the agent's tenant


def _headers(lines: list[str]) -> dict[str, str] | None:
    headers: dict[str, str] = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            return None
        key = name.lower()
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    return headers


def _tokens(value: str) -> set[str]:
    return {token.strip().lower() for token in value.split(",")}


def parse_head(head: bytes) -> Upgrade | None:
    """The upgrade asked for by a complete request head (without its blank line), or None when
    it is anything else: wrong method, not an upgrade, another subprotocol, bad key."""
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError:
        return None
    request_line, *lines = text.split("\r\n")
    parts = request_line.split(" ")
    headers = _headers(lines)
    if len(parts) != 3 or parts[0] != "GET" or parts[2] != "HTTP/1.1" or headers is None:
        return None
    key = headers.get("sec-websocket-key", "")
    if ("websocket" not in _tokens(headers.get("upgrade", ""))
            or "upgrade" not in _tokens(headers.get("connection", ""))
            or headers.get("sec-websocket-version") != "13" or len(key) != 24):
        return None
    protocols = {p.strip() for p in headers.get("sec-websocket-protocol", "").split(",")}
    if "rport-v1" not in protocols:
        other = sorted(p for p in protocols if p.startswith("rport-"))
        if other:
            log.info("ignored client connection using protocol %r", other[0])
        return None
    return Upgrade(key, parts[1], headers.get("host", ""))


def switching_protocols(upgrade: Upgrade, banner: bytes) -> bytes:
    """The 101 answer followed at once by our SSH banner frame (the server speaks first)."""
    return (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept_key(upgrade.key).encode() + b"\r\n"
            b"Sec-WebSocket-Protocol: rport-v1\r\n\r\n"
            + frame_header(len(banner), OP_BINARY) + banner)
