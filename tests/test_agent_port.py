"""Bad input on the agent port: each gets its documented answer and the server keeps serving."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import pytest

from rportd.client.connection import AgentSettings, open_ssh
from rportd.client.websocket import connect_websocket, parse_server
from rportd.wire.asyncssh_internals import send_global_request
from rportd.wire.hostkey import derive_key_from_seed, fingerprint
from rportd.wire.websocket import build_frame

from .processes import Agent, Rportd

SEED_FINGERPRINT = "36:98:56:12:f3:dc:e5:8d:ac:96:48:23:b6:f0:42:15"


@pytest.fixture
def rportd(tmp_path: Path) -> Iterator[Rportd]:
    server = Rportd(tmp_path, {"server": {"auth": "c1:secret", "max_request_bytes_client": 1024}}).start()
    yield server
    server.stop()


def settings(rportd: Rportd, auth: str = "c1:secret") -> AgentSettings:
    auth_id, _, password = auth.partition(":")
    return AgentSettings(parse_server(rportd.url), auth_id, password, keepalive=0)


async def raw_exchange(rportd: Rportd, request: bytes, then: bytes = b"") -> bytes:
    """Send raw bytes to the agent port and read until the server closes (bounded)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", rportd.agent_port)
    writer.write(request)
    if then:
        await asyncio.sleep(0.2)
        writer.write(then)
    try:
        return await asyncio.wait_for(reader.read(1 << 16), 10)
    finally:
        writer.close()


async def still_serves(rportd: Rportd) -> None:
    """A well-behaved agent still authenticates after the bad input."""
    conn = await open_ssh(settings(rportd))
    ok, _ = await send_global_request(conn, "new_connection", b'{"ID":"healthy"}')
    assert ok
    conn.close()


UPGRADE = ("GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n")


@pytest.mark.parametrize("request_text", [
    "GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "GET /anything/else HTTP/1.1\r\nHost: x\r\n\r\n",
    UPGRADE + "\r\n",
    UPGRADE + "Sec-WebSocket-Protocol: rport-v2\r\n\r\n",
    UPGRADE + "Sec-WebSocket-Protocol: chat\r\n\r\n",
])
async def test_anything_but_an_rport_v1_upgrade_gets_an_empty_404(
        rportd: Rportd, request_text: str) -> None:
    answer = await raw_exchange(rportd, request_text.encode())
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 404 Not Found")
    assert b"Content-Length: 0" in head and body == b""
    await still_serves(rportd)


async def test_garbage_after_the_upgrade_is_hung_up_on(rportd: Rportd) -> None:
    upgrade = (UPGRADE + "Sec-WebSocket-Protocol: rport-v1\r\n\r\n").encode()
    answer = await raw_exchange(rportd, upgrade, then=b"\xff" * 64 + os.urandom(512))
    assert answer.startswith(b"HTTP/1.1 101 Switching Protocols")
    await still_serves(rportd)


async def test_a_banner_that_is_not_ssh_is_hung_up_on(rportd: Rportd) -> None:
    upgrade = (UPGRADE + "Sec-WebSocket-Protocol: rport-v1\r\n\r\n").encode()
    frame = build_frame(b"HELLO-not-ssh\r\n", 2, mask=True)
    answer = await raw_exchange(rportd, upgrade, then=frame)
    assert answer.startswith(b"HTTP/1.1 101")
    assert b"SSH-rport-v1-server\r\n" in answer  # the server's banner, then it hangs up
    await still_serves(rportd)


async def test_server_banner_is_rports(rportd: Rportd) -> None:
    transport = await connect_websocket(parse_server(rportd.url), "rport test")
    received: list[bytes] = []
    done = asyncio.Event()

    class Collect(asyncio.Protocol):
        def data_received(self, data: bytes) -> None:
            received.append(data)
            done.set()

    transport.attach(Collect())
    await asyncio.wait_for(done.wait(), 5)
    assert received[0] == b"SSH-rport-v1-server\r\n"
    transport.close()


@pytest.mark.parametrize("payload, reply", [
    (b'{"ID":"' + b"x" * 1100 + b'"}', "invalid connection request: larger than 1024 bytes"),
    (b"{not json", "invalid connection request:"),
    (b'["a list"]', "invalid connection request: not a JSON object"),
    (b'{"ID": 42}', "invalid connection request: ID must be a string"),
    (b'{"Tags": "t1"}', "invalid connection request: Tags must be a list of strings"),
    (b'{"Remotes": [{"lport": "99999", "rport": "22"}]}', "invalid connection request: lport"),
])
async def test_bad_connection_requests_get_a_clear_failure(rportd: Rportd, payload: bytes,
                                                           reply: str) -> None:
    conn = await open_ssh(settings(rportd))
    ok, text = await send_global_request(conn, "new_connection", payload)
    assert not ok
    assert text.decode().startswith(reply)
    await asyncio.wait_for(conn.wait_closed(), 5)
    await still_serves(rportd)


async def test_requests_before_registration_are_refused_and_unknown_ones_answered(
        rportd: Rportd) -> None:
    conn = await open_ssh(settings(rportd))
    ok, text = await send_global_request(conn, "ping", b"")
    assert (ok, text) == (False, b"expecting connection request")
    ok, _ = await send_global_request(conn, "new_connection", b'{"ID":"p1"}')
    assert ok
    assert await send_global_request(conn, "ping", b"") == (True, b"")
    # unknown request types get a failure, never a hang
    ok, _ = await asyncio.wait_for(send_global_request(conn, "bogus", b"{}"), 5)
    assert not ok
    conn.close()


async def test_a_channel_opened_by_the_agent_is_refused(rportd: Rportd) -> None:
    conn = await open_ssh(settings(rportd))
    ok, _ = await send_global_request(conn, "new_connection", b'{"ID":"pivot"}')
    assert ok
    with pytest.raises(asyncssh.ChannelOpenError):
        await conn.open_connection("127.0.0.1", rportd.api_port)
    with pytest.raises(asyncssh.ChannelOpenError):
        await conn.create_session(asyncssh.SSHClientSession)
    assert await send_global_request(conn, "ping", b"") == (True, b"")
    conn.close()
    await still_serves(rportd)


def test_key_seed_gives_rports_fingerprint(tmp_path: Path) -> None:
    seed = "5448e69530b4b97fb510f96ff1550500b093"
    assert fingerprint(derive_key_from_seed(seed)) == SEED_FINGERPRINT
    server = Rportd(tmp_path, {"server": {"auth": "c1:secret", "key_seed": seed}}).start()
    try:
        pinned = Agent(tmp_path, server.url, "c1:secret", "--fingerprint", SEED_FINGERPRINT[:11],
                       name="pinned").start()
        pinned.wait_connected()
        assert f"Fingerprint {SEED_FINGERPRINT}" in pinned.log_text()
        pinned.stop()
        wrong = Agent(tmp_path, server.url, "c1:secret", "--fingerprint", "00:11",
                      name="wrong").start()
        assert wrong.wait_exit() == 0
        assert "Connected" not in wrong.log_text()
    finally:
        server.stop()


def test_generated_host_key_is_kept_across_restarts(tmp_path: Path) -> None:
    server = Rportd(tmp_path, {"server": {"auth": "c1:secret"}}).start()
    server.stop()
    first = (tmp_path / "data" / "rportd_host_key").read_bytes()
    assert oct((tmp_path / "data" / "rportd_host_key").stat().st_mode & 0o777) == "0o600"
    server.start()
    server.stop()
    assert (tmp_path / "data" / "rportd_host_key").read_bytes() == first
