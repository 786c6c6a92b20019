"""The agent port under strangers: oversized frames, unmasked frames, idle and slow sockets,
running out of file descriptors. Each case runs against a real rportd process."""

from __future__ import annotations

import asyncio
import resource
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rportd.client.connection import AgentSettings, open_ssh
from rportd.client.websocket import parse_server
from rportd.wire.asyncssh_internals import send_global_request
from rportd.wire.websocket import build_frame

from .processes import Rportd, wait_for

UPGRADE = (
    b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    b"Sec-WebSocket-Protocol: rport-v1\r\n\r\n"
)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.fixture
def rportd(tmp_path: Path) -> Iterator[Rportd]:
    server = Rportd(
        tmp_path,
        {
            "server": {
                "auth": "c1:secret",
                "upgrade_timeout": "2s",
                "handshake_timeout": "3s",
                "login_timeout": "6s",
            }
        },
        api=False,
    ).start()
    yield server
    server.stop()


async def upgraded(rportd: Rportd) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", rportd.agent_port)
    writer.write(UPGRADE)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 101 ")
    await asyncio.wait_for(reader.readexactly(23), 5)  # our banner frame
    return reader, writer


async def close_code(reader: asyncio.StreamReader) -> int:
    """The status code of the server's close frame; then the server hangs up."""
    header = await asyncio.wait_for(reader.readexactly(2), 5)
    assert header[0] == 0x88, header
    code = struct.unpack("!H", await reader.readexactly(header[1]))[0]
    assert await asyncio.wait_for(reader.read(), 5) == b""
    return int(code)


async def login_seconds(rportd: Rportd) -> float:
    """Time for a well-behaved agent to log in and register."""
    started = time.monotonic()
    settings = AgentSettings(parse_server(rportd.url), "c1", "secret", keepalive=0)
    conn = await asyncio.wait_for(open_ssh(settings), 30)
    ok, _ = await send_global_request(conn, "new_connection", b'{"ID":"legit"}')
    elapsed = time.monotonic() - started
    assert ok
    conn.close()
    return elapsed


async def test_a_1_gib_frame_header_is_refused_before_its_payload(rportd: Rportd) -> None:
    assert rportd.proc is not None
    before = rss_kib(rportd.proc.pid)
    reader, writer = await upgraded(rportd)
    writer.write(b"\x82\xff" + (1 << 30).to_bytes(8, "big") + b"mask")
    assert await close_code(reader) == 1009  # from the header alone
    with pytest.raises((ConnectionError, TimeoutError)):
        for _ in range(64):  # 64 MiB of "payload" after it go nowhere
            writer.write(b"\0" * (1 << 20))
            await asyncio.wait_for(writer.drain(), 5)
    assert rss_kib(rportd.proc.pid) - before < 16 * 1024
    assert await login_seconds(rportd) < 5


def test_a_ping_flood_that_never_reads_makes_rportd_hold_nothing(rportd: Rportd) -> None:
    """Pongs are not queued for a peer that does not read (it then is not read either), so a
    stranger streaming pings cannot grow rportd's memory (480 MiB in 8 s before)."""
    assert rportd.proc is not None
    before = rss_kib(rportd.proc.pid)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", rportd.agent_port))
    sock.sendall(UPGRADE + build_frame(b"SSH-2.0-x\r\n", 2, mask=True))
    pings = build_frame(b"x" * 125, 9, mask=True) * 2000
    sock.settimeout(0.5)
    started = time.monotonic()
    try:
        while time.monotonic() - started < 3:
            sock.sendall(pings)
    except (TimeoutError, OSError):
        pass  # rportd stopped reading: the flood cannot even be sent
    finally:
        growth = rss_kib(rportd.proc.pid) - before
        sock.close()
    assert growth < 16 * 1024, f"RSS grew {growth} KiB"


async def test_unmasked_client_frames_close_the_connection(rportd: Rportd) -> None:
    reader, writer = await upgraded(rportd)
    writer.write(build_frame(b"SSH-2.0-x\r\n", 2, mask=False))
    assert await close_code(reader) == 1002
    writer.close()


async def test_an_oversized_frame_before_login_is_refused(rportd: Rportd) -> None:
    reader, writer = await upgraded(rportd)
    writer.write(build_frame(b"SSH-2.0-x\r\n" + b"x" * 40_000, 2, mask=True))
    assert await close_code(reader) == 1009
    writer.close()


async def hold(rportd: Rportd, count: int, first: bytes, source: str = "127.0.0.2") -> list[socket.socket]:
    """`count` sockets from `source` (not the agents' 127.0.0.1) that send `first`, then
    nothing."""
    held = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", rportd.agent_port), source_address=(source, 0))
        if first:
            sock.sendall(first)
        held.append(sock)
    return held


def hung_up(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        while True:
            if sock.recv(65536) == b"":
                return True
    except BlockingIOError:
        return False
    except ConnectionError:
        return True


async def test_idle_and_stalled_strangers_do_not_delay_a_real_agent(rportd: Rportd) -> None:
    """200 idle sockets, 200 idle upgrades, and 64 that stop after their version line and
    KEXINIT-sized frame: a real agent still logs in at once, and every stranger is cut off after
    the deadlines (2 s for the upgrade and version line, 3 s for the key exchange)."""
    stalled_first = (
        UPGRADE + build_frame(b"SSH-2.0-slow\r\n", 2, mask=True) + build_frame(b"\0" * 900, 2, mask=True)
    )
    strangers = (
        await hold(rportd, 200, b"", "127.0.0.2")
        + await hold(rportd, 200, UPGRADE, "127.0.0.3")
        + await hold(rportd, 64, stalled_first, "127.0.0.4")
    )
    try:
        assert await login_seconds(rportd) < 2
        await asyncio.to_thread(
            wait_for,
            lambda: all(hung_up(s) for s in strangers),
            15,
            "every idle or stalled stranger hung up on",
        )
    finally:
        for sock in strangers:
            sock.close()


async def test_one_source_gets_at_most_its_share_of_unauthenticated_connections(tmp_path: Path) -> None:
    server = Rportd(
        tmp_path, {"server": {"auth": "c1:secret", "max_unauthenticated_per_address": 20}}, api=False
    )
    server.start()
    try:
        strangers = await hold(server, 30, UPGRADE)
        await asyncio.to_thread(
            wait_for,
            lambda: sum(hung_up(s) for s in strangers) >= 10,
            5,
            "the connections over the cap refused",
        )
        assert sum(hung_up(s) for s in strangers) == 10
        assert await login_seconds(server) < 2  # another address is not affected
        for sock in strangers:
            sock.close()
    finally:
        server.stop()


async def test_at_the_global_cap_the_oldest_stranger_makes_room_for_an_agent(
        tmp_path: Path) -> None:
    """Strangers from many addresses fill max_unauthenticated: a real agent still logs in at
    once, because the oldest connection that has not logged in is closed for it."""
    server = Rportd(tmp_path, {"server": {"auth": "c1:secret", "max_unauthenticated": 60}},
                    api=False)
    server.start()
    strangers: list[socket.socket] = []
    try:
        for source in ("127.0.0.2", "127.0.0.3", "127.0.0.4"):
            strangers += await hold(server, 20, UPGRADE, source)
        assert await login_seconds(server) < 2
        await asyncio.to_thread(wait_for, lambda: hung_up(strangers[0]), 5,
                                "the oldest stranger closed")
        assert not any(hung_up(s) for s in strangers[-10:])  # only what was needed
    finally:
        for sock in strangers:
            sock.close()
        server.stop()


def test_running_out_of_descriptors_pauses_accepting_without_a_log_flood(tmp_path: Path) -> None:
    """rportd limited to 160 open files, 400 strangers connect at once: accepting pauses with
    one log line per interval (asyncio's own loop logged one per backlog slot, 47 MB in 20 s),
    and once the strangers are cut off a real agent logs in."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (160, 160))

    server = Rportd(tmp_path, {"server": {"auth": "c1:secret", "upgrade_timeout": "2s"}}, api=False)
    server.preexec = limit
    server.start()
    try:
        strangers = asyncio.run(hold(server, 400, b"", "127.0.0.2"))
        time.sleep(3)
        for sock in strangers:
            sock.close()
        assert asyncio.run(login_seconds(server)) < 10
        log = server.log_text()
        assert log.count("out of system resource") == 0
        assert log.count("out of file descriptors") <= 2
        assert len(log) < 50_000
    finally:
        server.stop()
