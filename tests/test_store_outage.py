"""Database outages: a relay of the test's own between rportd and the real MariaDB first refuses,
then stalls the database connections; rportd answers 503 within db_timeout, keeps its agents,
serves what it holds in memory, loses nothing and recovers without a restart. SQLite: a locked
file is an outage too. (The shared MariaDB itself is never stopped.)"""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from .conftest import MYSQL_HOST, MYSQL_PORT, mysql_execute
from .helpers import Response, free_port, http, write_config
from .processes import Agent, Rportd, wait_for

DB_TIMEOUT = 2.0
ADMIN = ("admin", "foobaz")
DRIVER_TEXT = ("2003", "2013", "MySQL", "Can't connect", "Lost connection", "locked", "sqlite")


class Relay:
    """A TCP relay on 127.0.0.1 in its own thread: `forward`, `refuse` (not listening, every
    connection reset) or `stall` (accepts, forwards nothing, not even to existing ones)."""

    def __init__(self, upstream: tuple[str, int]):
        self.upstream = upstream
        self.port = free_port()
        self.mode = "forward"
        self._server: asyncio.Server | None = None
        self._transports: set[asyncio.BaseTransport] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._run(self._listen())

    def _run(self, coro: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._transports.add(writer.transport)
        if self.mode != "forward":
            await _drain_forever(reader)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        self._transports.add(up_writer.transport)
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer),
                             return_exceptions=True)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1 << 16):
            if self.mode == "forward":  # stalled: bytes are swallowed
                writer.write(data)
                await writer.drain()
        writer.close()

    def _reset_all(self) -> None:
        for transport in self._transports:
            sock = transport.get_extra_info("socket")
            if sock is not None and not transport.is_closing():
                # RST rather than FIN: "connection reset by peer"
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        self._transports.clear()

    async def _set(self, mode: str) -> None:
        self.mode = mode
        if mode == "refuse":
            if self._server is not None:
                self._server.close()
                self._server = None
            self._reset_all()
        elif mode == "forward":
            self._reset_all()  # stalled connections lost bytes: they are broken for good
            await self._listen()
        else:
            await self._listen()

    def set(self, mode: str) -> None:
        self._run(self._set(mode))

    def close(self) -> None:
        self.set("refuse")
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()


async def _drain_forever(reader: asyncio.StreamReader) -> None:
    while await reader.read(1 << 16):
        pass


@pytest.fixture
def relay() -> Iterator[Relay]:
    relay = Relay((MYSQL_HOST, MYSQL_PORT))
    yield relay
    relay.close()


def _migrate(tmp: Path, database: dict[str, object]) -> None:
    config = write_config(tmp / "migrate.conf", {"server": {"allow_root": True,
                                                            "data_dir": str(tmp / "data")},
                                                 "database": database})
    subprocess.run([sys.executable, "-m", "rportd.cli", "migrate", "-c", str(config)],
                   check=True, capture_output=True)


def assert_unavailable(answer: Response, started: float) -> None:
    elapsed = time.monotonic() - started
    assert answer.status == 503, answer.body
    assert answer.error_code == "ERR_CODE_DATABASE_UNAVAILABLE"
    text = answer.body.decode()
    assert not any(needle in text for needle in DRIVER_TEXT), text
    assert elapsed < DB_TIMEOUT + 2.5, f"503 took {elapsed:.1f}s"


def timed(port: int, method: str, path: str, **kwargs: Any) -> tuple[Response, float]:
    started = time.monotonic()
    return http(port, method, path, **kwargs), started


def _credential(index: int) -> bytes:
    return json.dumps({"id": f"made{index}", "password": "12345678"}).encode()


def check_outage(rportd: Rportd, agent: Agent, token: str, index: int) -> None:
    port = rportd.api_port
    assert_unavailable(*timed(port, "GET", "/api/v1/clients-auth", basic=ADMIN))
    assert_unavailable(*timed(port, "POST", "/api/v1/clients-auth", basic=ADMIN,
                              body=_credential(index)))
    # more callers than pooled connections: each still answered within the deadline
    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda _: timed(port, "GET", "/api/v1/clients-auth",
                                                basic=ADMIN), range(12)))
    for answer, started in answers:
        assert_unavailable(answer, started)
    # served from memory: the listing, for a token already issued and for basic auth
    for auth in ({"token": token}, {"basic": ADMIN}):
        listed = http(port, "GET", "/api/v1/clients", **auth)  # type: ignore[arg-type]
        assert listed.status == 200
        assert [(c["id"], c["connection_state"]) for c in listed.json()["data"]] == [
            ("a1", "connected")]
    assert agent.proc is not None and agent.proc.poll() is None
    assert agent.log_text().count("client: Connected") == 1  # never dropped, never reconnected


@pytest.mark.mysql
def test_mysql_refused_then_stalled_then_back(tmp_path: Path, mysql_db: str,
                                              relay: Relay) -> None:
    direct = {"db_type": "mysql", "db_host": f"{MYSQL_HOST}:{MYSQL_PORT}", "db_user": "root",
              "db_name": mysql_db}
    _migrate(tmp_path, direct)
    mysql_execute(mysql_db, "INSERT INTO clients_auth (id, password) VALUES "
                            "('c1', 'secret'), ('c2', 'secret2')")
    rportd = Rportd(tmp_path, {
        "server": {"auth_table": "clients_auth"}, "api": {"auth": "admin:foobaz"},
        "database": {**direct, "db_host": f"127.0.0.1:{relay.port}",
                     "db_timeout": f"{DB_TIMEOUT:g}s"}}).start()
    agent = Agent(tmp_path, rportd.url, "c1:secret", "--id", "a1", name="a1").start()
    second = Agent(tmp_path, rportd.url, "c2:secret2", "--id", "a2", name="a2")
    try:
        agent.wait_connected()
        assert rportd.proc is not None
        pid, port = rportd.proc.pid, rportd.api_port
        token = http(port, "GET", "/api/v1/login", basic=ADMIN).json()["data"]["token"]
        assert http(port, "POST", "/api/v1/clients-auth", basic=ADMIN,
                    body=_credential(0)).status == 201
        relay.set("refuse")
        check_outage(rportd, agent, token, 1)
        relay.set("stall")
        check_outage(rportd, agent, token, 2)
        relay.set("forward")
        wait_for(lambda: http(port, "GET", "/api/v1/clients-auth", basic=ADMIN).status == 200,
                 timeout=DB_TIMEOUT * 3, what="the API answering from the database again")
        ids = [c["id"] for c in http(port, "GET", "/api/v1/clients-auth",
                                     basic=ADMIN).json()["data"]]
        assert ids == ["c1", "c2", "made0"]  # nothing lost, nothing half-written
        assert http(port, "POST", "/api/v1/clients-auth", basic=ADMIN,
                    body=_credential(3)).status == 201
        second.start().wait_connected()  # registration writes to the database again
        listed = http(port, "GET", "/api/v1/clients", token=token).json()["data"]
        assert sorted((c["id"], c["connection_state"]) for c in listed) == [
            ("a1", "connected"), ("a2", "connected")]
        assert agent.log_text().count("client: Connected") == 1
        assert rportd.proc is not None and rportd.proc.pid == pid  # never restarted
    finally:
        second.stop()
        agent.stop()
        rportd.stop()
    assert set(_mysql_ids(mysql_db, "clients_auth")) == {"c1", "c2", "made0", "made3"}
    assert set(_mysql_ids(mysql_db, "clients")) == {"a1", "a2"}
    assert "Traceback" not in rportd.log_text()


def _mysql_ids(db: str, table: str) -> list[str]:
    import pymysql

    conn = pymysql.connect(host=MYSQL_HOST, port=MYSQL_PORT, user="root", database=db)
    try:
        with conn.cursor() as cursor:
            cursor.execute(f"SELECT id FROM `{table}`")
            return [str(row[0]) for row in cursor.fetchall()]
    finally:
        conn.close()


def test_sqlite_locked_file_is_503_then_recovers(tmp_path: Path) -> None:
    db = tmp_path / "rportd.db"
    database = {"db_type": "sqlite", "db_name": str(db), "db_timeout": f"{DB_TIMEOUT:g}s"}
    _migrate(tmp_path, database)
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO clients_auth (id, password) VALUES ('c1', 'secret')")
    rportd = Rportd(tmp_path, {"server": {"auth_table": "clients_auth"},
                               "api": {"auth": "admin:foobaz"}, "database": database}).start()
    agent = Agent(tmp_path, rportd.url, "c1:secret", "--id", "a1").start()
    try:
        agent.wait_connected()
        port = rportd.api_port
        locker = sqlite3.connect(db, isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
        try:
            assert_unavailable(*timed(port, "POST", "/api/v1/clients-auth", basic=ADMIN,
                                      body=_credential(1)))
            assert http(port, "GET", "/api/v1/clients", basic=ADMIN).status == 200
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        assert http(port, "POST", "/api/v1/clients-auth", basic=ADMIN,
                    body=_credential(2)).status == 201
        assert agent.log_text().count("client: Connected") == 1
    finally:
        agent.stop()
        rportd.stop()


@pytest.mark.mysql
def test_mysql_outage_tells_strangers_nothing(tmp_path: Path, mysql_db: str,
                                              relay: Relay) -> None:
    """Users in tables: a login during an outage is a 503 without driver text, for anyone."""
    import bcrypt

    direct = {"db_type": "mysql", "db_host": f"{MYSQL_HOST}:{MYSQL_PORT}", "db_user": "root",
              "db_name": mysql_db}
    _migrate(tmp_path, direct)
    hashed = bcrypt.hashpw(b"ops-password", bcrypt.gensalt(4)).decode()
    mysql_execute(mysql_db, f"INSERT INTO users (username, password) VALUES ('ops', '{hashed}')")
    rportd = Rportd(tmp_path, {
        "server": {"auth": "c1:secret"},
        "api": {"auth_user_table": "users", "auth_group_table": "groups"},
        "database": {**direct, "db_host": f"127.0.0.1:{relay.port}",
                     "db_timeout": f"{DB_TIMEOUT:g}s"}}).start()
    try:
        port = rportd.api_port
        assert http(port, "GET", "/api/v1/me", basic=("ops", "ops-password")).status == 200
        for mode in ("refuse", "stall"):
            relay.set(mode)
            for basic in (("ops", "ops-password"), ("stranger", "guess")):
                assert_unavailable(*timed(port, "GET", "/api/v1/me", basic=basic))
            assert_unavailable(*timed(port, "POST", "/api/v1/login",
                                      body=b'{"username": "x", "password": "y"}'))
            assert http(port, "GET", "/api/v1/health").status == 200
        relay.set("forward")
        wait_for(lambda: http(port, "GET", "/api/v1/me",
                              basic=("ops", "ops-password")).status == 200,
                 timeout=DB_TIMEOUT * 3, what="logins working again")
    finally:
        rportd.stop()
    assert "Traceback" not in rportd.log_text()
