"""The API under abuse: bad input answered 4xx in rport's shape, deadlines for silent and slow
clients, fair admission while tunnels stream, a bounded listing cache, and the aiohttp internals
that rportd.api.http_server relies on. Real rportd, real agents, real sockets."""

from __future__ import annotations

import asyncio
import base64
import inspect
import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from rportd.api.clients import ListingCache, _normalised_query
from rportd.api.http_server import ApiRunner, JsonErrorRequestHandler

from .helpers import Response, http, write_config
from .processes import Agent, Rportd, wait_for
from .test_agents import EchoTarget
from .test_api import ADMIN, USERS

READ_TIMEOUT = 2.0
BASIC = "Basic " + base64.b64encode(b"admin:foobaz").decode()


class Server:
    def __init__(self, rportd: Rportd, agent: Agent):
        self.rportd, self.agent = rportd, agent

    def call(self, method: str, path: str, **kwargs: object) -> Response:
        return http(self.rportd.api_port, method, path, **kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("hardening")
    (tmp / "users.json").write_text(json.dumps(USERS))
    rportd = Rportd(tmp, {
        "server": {"auth": "c1:secret"},
        "api": {"auth_file": str(tmp / "users.json"), "read_timeout": f"{READ_TIMEOUT:g}s",
                "rate_while_tunnels_busy": 40},
        "logging": {"log_level": "debug"},
    }).start()
    agent = Agent(tmp, rportd.url, "c1:secret", "--id", "a1").start()
    agent.wait_connected()
    yield Server(rportd, agent)
    agent.stop()
    rportd.stop()


def raw_exchange(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes, read until the server closes or the deadline."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        conn.sendall(data)
        received = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = conn.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not chunk:
                break
            received += chunk
        return received


def parse(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), headers, body


# ---------------------------------------------------------------- bad input: a clear 4xx


def test_json_nested_5000_deep_is_a_400(server: Server) -> None:
    deep = b"[" * 5000 + b"]" * 5000
    for path, extra in (("/api/v1/login", {}), ("/api/v1/clients-auth", {"basic": ADMIN})):
        answer = server.call("POST", path, body=deep, **extra)  # type: ignore[arg-type]
        assert answer.status == 400, answer.body
        assert answer.error_code == "ERR_CODE_INVALID_JSON"
    nested_ok = server.call("POST", "/api/v1/login",
                            body=b'{"username": "admin", "password": "foobaz", "x": [[[1]]]}')
    assert nested_ok.status == 200
    assert "RecursionError" not in server.rportd.log_text()


def test_unassignable_local_host_is_its_own_400(server: Server) -> None:
    answer = server.call("PUT", "/api/v1/clients/a1/tunnels?remote=22&check_port=0"
                                "&local=203.0.113.9:20000", basic=ADMIN)
    assert answer.status == 400 and answer.error_code == "ERR_CODE_LOCAL_ADDRESS_NOT_AVAILABLE"
    assert "Cannot assign" not in answer.body.decode()  # no OS text
    unresolvable = server.call("PUT", "/api/v1/clients/a1/tunnels?remote=22&check_port=0"
                                      "&local=no-such-host.invalid:20000", basic=ADMIN)
    assert unresolvable.error_code == "ERR_CODE_LOCAL_ADDRESS_NOT_AVAILABLE"


def test_non_ascii_digits_are_a_400(server: Server) -> None:
    answer = server.call("GET", "/api/v1/clients?page%5Blimit%5D=%C2%B2", basic=ADMIN)
    assert answer.status == 400 and answer.error_code == "ERR_CODE_INVALID_REQUEST"


def test_oversized_headers_get_json_and_no_traceback(server: Server) -> None:
    request = (b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n")
    status, headers, body = parse(raw_exchange(server.rportd.api_port, request))
    assert status in (400, 431) and headers["Content-Type"].startswith("application/json")
    assert json.loads(body)["errors"][0]["code"].startswith("ERR_CODE_")
    log = server.rportd.log_text()
    assert "Traceback" not in log and "Error handling request" not in log


def test_405_carries_allow(server: Server) -> None:
    answer = server.call("POST", "/api/v1/clients", basic=ADMIN)
    assert answer.status == 405 and answer.error_code == "ERR_CODE_METHOD_NOT_ALLOWED"
    assert answer.headers["Allow"] == "GET"
    tunnels = server.call("GET", "/api/v1/clients/a1/tunnels", basic=ADMIN)
    assert tunnels.status == 405 and tunnels.headers["Allow"] == "PUT"


def test_a_client_hanging_up_mid_body_is_one_debug_line(server: Server) -> None:
    before = server.rportd.log_text().count("the client hung up")
    with socket.create_connection(("127.0.0.1", server.rportd.api_port), timeout=5) as conn:
        conn.sendall(b"POST /api/v1/clients-auth HTTP/1.1\r\nHost: x\r\nAuthorization: "
                     + BASIC.encode() + b"\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000\r\n\r\n{\"id\": ")
        # the server now waits for the rest of the body; the socket closes here
    wait_for(lambda: server.rportd.log_text().count("the client hung up") > before,
             what=lambda: f"a 'hung up' debug line:\n{server.rportd.log_text()[-3000:]}")
    log = server.rportd.log_text()
    assert log.count("the client hung up") == before + 1
    assert "unexpected error" not in log and "Traceback" not in log


# ---------------------------------------------------------------- deadlines


def test_silent_and_half_sent_connections_are_closed(server: Server) -> None:
    port = server.rportd.api_port
    silent = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(300)]
    half = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(50)]
    for conn in half:
        conn.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    try:
        started = time.monotonic()
        assert server.call("GET", "/api/v1/status", basic=ADMIN).status == 200
        assert time.monotonic() - started < 1.0  # a legitimate request is not held up
        deadline = time.monotonic() + READ_TIMEOUT + 8
        for conn in silent + half:
            conn.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                assert conn.recv(1024) == b""  # closed by the server, nothing sent
            except ConnectionResetError:
                pass
        assert time.monotonic() - started < READ_TIMEOUT + 8
    finally:
        for conn in silent + half:
            conn.close()


def test_a_body_that_never_arrives_gets_408(server: Server) -> None:
    started = time.monotonic()
    raw = raw_exchange(server.rportd.api_port,
                       b"POST /api/v1/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                       b"\r\nContent-Length: 100\r\n\r\n{", timeout=READ_TIMEOUT + 8)
    status, _, body = parse(raw)
    assert status == 408 and json.loads(body)["errors"][0]["code"] == "ERR_CODE_REQUEST_TIMEOUT"
    assert READ_TIMEOUT - 0.5 < time.monotonic() - started < READ_TIMEOUT + 5


# ---------------------------------------------------------------- fair admission


class Stream:
    """Keeps a tunnel busy: sends and reads back echoed bytes until stopped."""

    def __init__(self, port: int):
        self.conn = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.stop = threading.Event()
        self.moved = 0
        self.threads = [threading.Thread(target=self._send, daemon=True),
                        threading.Thread(target=self._read, daemon=True)]
        for thread in self.threads:
            thread.start()

    def _send(self) -> None:
        block = os.urandom(1 << 16)
        while not self.stop.is_set():
            try:
                self.conn.sendall(block)
            except OSError:
                return

    def _read(self) -> None:
        while not self.stop.is_set():
            try:
                chunk = self.conn.recv(1 << 16)
            except OSError:
                return
            if not chunk:
                return
            self.moved += len(chunk)

    def close(self) -> None:
        self.stop.set()
        self.conn.close()
        for thread in self.threads:
            thread.join(5)


async def _flood(port: int, count: int, done: asyncio.Event) -> None:
    """`count` unauthenticated /health requests at once, each on its own connection."""
    async def one() -> None:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return
        try:
            writer.write(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            await reader.read()
        finally:
            writer.close()  # also when the flood is cancelled

    await asyncio.gather(*(one() for _ in range(count)), return_exceptions=True)
    done.set()


async def _timed(port: int, path: str, auth: str | None) -> float:
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    header = f"Authorization: {auth}\r\n" if auth else ""
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n{header}Connection: close\r\n\r\n".encode())
    answer = await reader.read()
    writer.close()
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    return time.monotonic() - started


def test_strangers_cannot_slow_down_users_while_tunnels_stream(server: Server) -> None:
    target = EchoTarget()
    made = server.call("PUT", f"/api/v1/clients/a1/tunnels?remote={target.port}", basic=ADMIN)
    assert made.status == 200, made.body
    tunnel = made.json()["data"]
    stream = Stream(int(tunnel["lport"]))
    port = server.rportd.api_port

    async def scenario() -> tuple[float, float]:
        done = asyncio.Event()
        flood = asyncio.create_task(_flood(port, 400, done))
        await asyncio.sleep(0.5)  # let the flood queue up (400 at 40/s: 10 s of backlog)
        user = await _timed(port, "/api/v1/clients", BASIC)
        stranger = await _timed(port, "/api/v1/health", None)
        flood.cancel()
        await asyncio.gather(flood, return_exceptions=True)
        return user, stranger

    try:
        wait_for(lambda: stream.moved > 8 << 20, what="the tunnel streaming")
        for _ in range(3):  # the precondition (tunnels busy the whole time) is timing-dependent
            user, stranger = asyncio.run(scenario())
            if stranger > 2.0:
                break
    finally:
        stream.close()
        server.call("DELETE", f"/api/v1/clients/a1/tunnels/{tunnel['id']}", basic=ADMIN)
        target.close()
    assert stranger > 2.0, "the flood was not throttled: the test proves nothing"
    assert user < 1.0, f"an authenticated GET /clients waited {user:.2f}s behind strangers"


# ---------------------------------------------------------------- the listing cache


def test_listing_cache_ignores_junk_and_order() -> None:
    cache = ListingCache(1 << 20)
    queries = [{"sort": "name", "filter[name]": "a*,b*", "junk": "1"},
               {"filter[name]": "b*,a*,a*", "sort": "name", "other": "2"}]
    keys = {_normalised_query(q) for q in queries}
    assert len(keys) == 1
    for index in range(1000):
        cache.put((None, _normalised_query({"page[offset]": str(index)})), 1, b"x" * 4096)
    assert cache.size_bytes <= 1 << 20


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_rss_stays_bounded_across_a_listing_spray(tmp_path: Path) -> None:
    db = tmp_path / "rportd.db"
    database = {"db_type": "sqlite", "db_name": str(db)}
    migrate = write_config(tmp_path / "migrate.conf", {
        "server": {"allow_root": True, "data_dir": str(tmp_path / "data")}, "database": database})
    subprocess.run([sys.executable, "-m", "rportd.cli", "migrate", "-c", str(migrate)],
                   check=True, capture_output=True)
    details = json.dumps({"name": "client", "hostname": "h" * 1500, "tags": ["t"] * 50})
    with sqlite3.connect(db) as conn:
        conn.executemany("INSERT INTO clients (tenant, id, client_auth_id, details, tunnels, "
                         "disconnected_at) VALUES ('', ?, 'c1', ?, '[]', '2999-01-01T00:00:00Z')",
                         [(f"c{i:03d}", details) for i in range(300)])
    rportd = Rportd(tmp_path, {"server": {"auth": "c1:secret"},
                               "api": {"auth": "admin:foobaz", "listing_cache_bytes": 8 << 20},
                               "database": database}).start()
    try:
        assert pytest.approx(300) == http(rportd.api_port, "GET", "/api/v1/clients",
                                          basic=ADMIN).json()["meta"]["count"]
        assert rportd.proc is not None
        before = _rss_kib(rportd.proc.pid)
        for index in range(800):
            path = (f"/api/v1/clients?junk{index}=x" if index % 2 else
                    f"/api/v1/clients?filter%5Bname%5D=client,x{index}")  # distinct and full
            assert http(rportd.api_port, "GET", path, basic=ADMIN).status == 200
        grown = (_rss_kib(rportd.proc.pid) - before) / 1024
        assert grown < 64, f"RSS grew {grown:.0f} MiB over 800 listings"
    finally:
        rportd.stop()


# ---------------------------------------------------------------- aiohttp internals we rely on


def test_aiohttp_request_handler_contract() -> None:
    """rportd.api.http_server overrides these; a changed signature must fail here, loudly."""
    params = list(inspect.signature(web.RequestHandler.handle_error).parameters)
    assert params == ["self", "request", "status", "exc", "message"]
    init = inspect.signature(web.RequestHandler.__init__).parameters
    for name in ("manager", "loop", "keepalive_timeout", "lingering_time", "access_log",
                 "access_log_format", "access_log_class"):
        assert name in init, f"RequestHandler() lost {name!r}"
    assert isinstance(inspect.getattr_static(web.AppRunner, "server"), property)
    assert "runner.server" in inspect.getsource(web.TCPSite.start).replace("_runner", "runner")


async def test_aiohttp_behaviour_the_api_runner_relies_on() -> None:
    """Parse errors reach handle_error (JSON, no traceback) and the keep-alive timer closes a
    connection that never completes its request."""
    runner = ApiRunner(web.Application(), read_timeout=1.0, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        assert isinstance(runner.server(), JsonErrorRequestHandler)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 5)
        assert b"application/json" in answer and b'"errors"' in answer
        writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")  # headers never finished
        started = time.monotonic()
        assert await asyncio.wait_for(reader.read(), 10) == b""
        assert time.monotonic() - started < 4
        writer.close()
    finally:
        await runner.cleanup()
