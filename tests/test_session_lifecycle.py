"""Agent sessions against a real rportd: registrations racing disconnects, duplicate ids, a locked
database during registration, malformed requests."""

from __future__ import annotations

import asyncio
import json
import random
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rportd.client.connection import AgentSettings, open_ssh
from rportd.client.websocket import parse_server
from rportd.wire.asyncssh_internals import send_global_request

from .helpers import free_port, http
from .processes import Agent, Rportd, wait_for
from .test_agents import connected, own_db

ADMIN = ("admin", "foobaz")


@pytest.fixture
def rportd(tmp_path: Path) -> Iterator[Rportd]:
    server = Rportd(tmp_path, {"server": {"auth": "c1:secret", "keep_lost_clients": "1h"},
                               "api": {"auth": "admin:foobaz"}}).start()
    yield server
    server.stop()


def settings(rportd: Rportd) -> AgentSettings:
    return AgentSettings(parse_server(rportd.url), "c1", "secret", keepalive=0)


def clients(rportd: Rportd) -> dict[str, dict[str, Any]]:
    answer = http(rportd.api_port, "GET", "/api/v1/clients", basic=ADMIN)
    assert answer.status == 200, answer.body
    return {c["id"]: c for c in answer.json()["data"]}


def bindable(port: int) -> bool:
    try:
        socket.create_server(("127.0.0.1", port)).close()
        return True
    except OSError:
        return False


async def request_then_hang_up(rportd: Rportd, client_id: str, lport: int) -> None:
    """new_connection with a tunnel, then close before (or while) the server answers."""
    conn = await open_ssh(settings(rportd))
    remote = {"lhost": "127.0.0.1", "lport": str(lport), "rhost": "127.0.0.1", "rport": "22"}
    payload = json.dumps({"ID": client_id, "Remotes": [remote]}).encode()
    request = asyncio.ensure_future(send_global_request(conn, "new_connection", payload))
    await asyncio.sleep(random.choice((0, 0, 0.001, 0.003, 0.01)))
    conn.abort() if random.random() < 0.5 else conn.close()
    await asyncio.wait({request}, timeout=5)
    if request.done() and not request.cancelled():
        request.exception()  # retrieved: a lost connection is the expected outcome


async def test_registration_racing_a_disconnect_leaves_no_ghost(rportd: Rportd) -> None:
    lport = free_port()
    ids = [f"race-{i}" for i in range(50)]
    for client_id in ids:
        await request_then_hang_up(rportd, client_id, lport)

    def none_connected() -> bool:
        return not any(c["connection_state"] == "connected" for c in clients(rportd).values())

    await asyncio.to_thread(wait_for, none_connected, 20, "every raced client disconnected")
    await asyncio.to_thread(wait_for, lambda: bindable(lport), 10, "the tunnel port released")

    def delete_all() -> bool:
        """A registration still finishing may publish a (disconnected) record a moment after
        the listing was read; every record must be deletable, and none may stay connected."""
        for client_id in clients(rportd):
            gone = http(rportd.api_port, "DELETE", f"/api/v1/clients/{client_id}", basic=ADMIN)
            assert gone.status in (204, 404), (client_id, gone.body)
        return clients(rportd) == {}

    await asyncio.to_thread(wait_for, delete_all, 20, "every raced client deleted")


# ---------------------------------------------------------------- same id, two live agents


def test_a_second_agent_with_the_same_id_is_refused_without_flapping(
        tmp_path: Path, rportd: Rportd, procs: list[object]) -> None:
    first = Agent(tmp_path, rportd.url, "c1:secret", "--id", "twin", name="first")
    procs.append(first.start())
    first.wait_connected()
    second = Agent(tmp_path, rportd.url, "c1:secret", "--id", "twin", name="second")
    procs.append(second.start())
    second.wait_log("client is already connected:")
    time.sleep(6)  # the observation window itself: count reconnects over 6 s
    assert first.log_text().count("client: Connected") == 1
    assert "Disconnected" not in first.log_text()
    assert "client: Connected" not in second.log_text()
    assert second.proc is not None and second.proc.poll() is None, "the refused agent retries"
    assert clients(rportd)["twin"]["connection_state"] == "connected"


def test_an_agent_that_stopped_answering_is_replaced(
        tmp_path: Path, rportd: Rportd, procs: list[object]) -> None:
    tunnel = f"127.0.0.1:{free_port()}:127.0.0.1:22"  # the newcomer needs the same port
    frozen = Agent(tmp_path, rportd.url, "c1:secret", "--id", "twin", name="frozen",
                   remotes=(tunnel,))
    procs.append(frozen.start())
    frozen.wait_connected()
    assert frozen.proc is not None
    frozen.proc.send_signal(19)  # SIGSTOP: the TCP connection stays up, nothing answers
    try:
        newcomer = Agent(tmp_path, rportd.url, "c1:secret", "--id", "twin", name="newcomer",
                         remotes=(tunnel,))
        procs.append(newcomer.start())
        newcomer.wait_connected()
        assert "did not answer and is closed" in rportd.log_text()
    finally:
        frozen.proc.send_signal(18)  # SIGCONT, so it can be stopped
    assert clients(rportd)["twin"]["connection_state"] == "connected"
    assert [t["id"] for t in clients(rportd)["twin"]["tunnels"]] == ["1"]


# ---------------------------------------------------------------- the database during registration


class HeldLock:
    """Another process's exclusive transaction on rportd's SQLite file, held for `seconds`."""

    def __init__(self, db: Path, seconds: float):
        self.conn = sqlite3.connect(db, timeout=10, check_same_thread=False,
                                    isolation_level=None)
        self.conn.execute("BEGIN EXCLUSIVE")
        self.thread = threading.Thread(target=self._release, args=(seconds,), daemon=True)
        self.thread.start()

    def _release(self, seconds: float) -> None:
        time.sleep(seconds)
        self.conn.execute("ROLLBACK")
        self.conn.close()


def test_a_locked_database_during_registration_is_waited_out(
        tmp_path: Path, rportd: Rportd, procs: list[object]) -> None:
    # Longer than SQLite's 5 s busy timeout, so the first registration write fails for real.
    lock = HeldLock(own_db(tmp_path), 8)
    agent = Agent(tmp_path, rportd.url, "c1:secret", "--id", "patient")
    procs.append(agent.start())
    agent.wait_log("Connected", timeout=30)
    lock.thread.join(10)
    assert "Connection request failed" not in agent.log_text()
    assert agent.proc is not None and agent.proc.poll() is None
    assert agent.log_text().count("client: Connected") == 1
    assert "the database is unavailable" in rportd.log_text()
    wait_for(lambda: connected(own_db(tmp_path), "patient"), what="patient persisted")
    assert clients(rportd)["patient"]["connection_state"] == "connected"
    agent.stop()
    wait_for(lambda: clients(rportd)["patient"]["connection_state"] == "disconnected",
             what="patient disconnected")


# ---------------------------------------------------------------- malformed requests


async def new_connection(rportd: Rportd, request: dict[str, Any]) -> tuple[bool, str]:
    conn = await open_ssh(settings(rportd))
    try:
        ok, reply = await asyncio.wait_for(
            send_global_request(conn, "new_connection", json.dumps(request).encode()), 10)
        return ok, reply.decode()
    finally:
        conn.close()


@pytest.mark.parametrize("remote", [
    {"rport": "22", "acl": 5},
    {"rport": "22", "acl": ["127.0.0.1"]},
    {"rport": "22", "acl": "not-an-address"},
    {"rport": {"port": 22}},
    {"rport": "22", "lhost": ["x"]},
    {"rport": "22", "lport_random": "yes"},
    {"rport": "22", "rhost": "a b"},
    "22",
])
async def test_every_malformed_remote_gets_the_documented_reply(
        rportd: Rportd, remote: Any) -> None:
    ok, text = await new_connection(rportd, {"ID": "bad", "Remotes": [remote]})
    assert not ok and text.startswith("invalid connection request: "), text
    assert "bad" not in clients(rportd)


async def test_an_id_longer_than_the_column_is_refused_before_any_write(
        rportd: Rportd, tmp_path: Path) -> None:
    ok, text = await new_connection(rportd, {"ID": "x" * 151})
    assert not ok and text.startswith("invalid connection request: "), text
    assert clients(rportd) == {}
    ok, _ = await new_connection(rportd, {"ID": "y" * 150})
    assert ok


async def test_a_database_outage_beyond_the_retries_gets_the_text_clients_retry_on(
        tmp_path: Path, rportd: Rportd) -> None:
    lock = HeldLock(own_db(tmp_path), 22)
    conn = await open_ssh(settings(rportd))
    ok, text = await asyncio.wait_for(
        send_global_request(conn, "new_connection", b'{"ID":"unlucky"}'), 30)
    # Every rport client generation backs off and retries on this text, and only on it.
    assert not ok and text.decode().startswith('client is already connected: "unlucky"')
    assert "database is unavailable" in text.decode()
    await asyncio.wait_for(conn.wait_closed(), 5)
    await asyncio.to_thread(lock.thread.join, 10)
    assert "unlucky" not in clients(rportd) or (
        clients(rportd)["unlucky"]["connection_state"] == "disconnected")
