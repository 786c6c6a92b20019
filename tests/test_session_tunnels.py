"""Tunnels against a real rportd and real agents: users that never read, the local-port rules for
agent-requested tunnels, IPv6 targets, tunnel ids across deletes and reconnects."""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .helpers import free_port, http
from .processes import Agent, Rportd, wait_for

ADMIN = ("admin", "foobaz")


class Firehose:
    """A TCP server behind the agent that sends without pause to whoever connects, and notes
    when a connection ends (the agent closed its side)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.sent = 0
        self.ended = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        block = b"x" * 65536
        with conn:
            try:
                while True:
                    self.sent += conn.send(block)
            except OSError:
                self.ended.set()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def firehose() -> Iterator[Firehose]:
    target = Firehose()
    yield target
    target.close()


def start(tmp_path: Path, procs: list[object], **server: object) -> Rportd:
    rportd = Rportd(tmp_path, {"server": {"auth": "c1:secret", **server},
                               "api": {"auth": "admin:foobaz"}}).start()
    procs.append(rportd)
    return rportd


def silent_user(port: int) -> socket.socket:
    """A tunnel user that connects and never reads."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    return sock


def hung_up(sock: socket.socket) -> bool:
    """Whether the peer reset or closed the socket, seen without reading its data."""
    poller = select.poll()
    poller.register(sock, select.POLLERR | select.POLLHUP | select.POLLRDHUP)
    return bool(poller.poll(0))


def client(rportd: Rportd, client_id: str) -> dict[str, Any]:
    answer = http(rportd.api_port, "GET", f"/api/v1/clients/{client_id}", basic=ADMIN)
    assert answer.status == 200, answer.body
    return dict(answer.json()["data"])


def test_deleting_a_tunnel_whose_user_never_reads_is_prompt(
        tmp_path: Path, procs: list[object], firehose: Firehose) -> None:
    rportd = start(tmp_path, procs)
    lport = free_port()
    agent = Agent(tmp_path, rportd.url, "c1:secret", "--id", "deaf",
                  remotes=(f"127.0.0.1:{lport}:127.0.0.1:{firehose.port}",))
    procs.append(agent.start())
    agent.wait_connected()
    user = silent_user(lport)
    wait_for(lambda: firehose.sent > 1 << 20, what="data flowing towards the silent user")
    began = time.monotonic()
    deleted = http(rportd.api_port, "DELETE", "/api/v1/clients/deaf/tunnels/1", basic=ADMIN)
    assert deleted.status == 204, deleted.body
    assert time.monotonic() - began < 5
    wait_for(lambda: hung_up(user), 5, "the silent user cut off")
    user.close()
    assert client(rportd, "deaf")["tunnels"] == []
    agent.stop()
    wait_for(lambda: client(rportd, "deaf")["connection_state"] == "disconnected",
             what="the disconnect recorded")


def test_a_user_that_stops_reading_is_cut_after_the_write_deadline(
        tmp_path: Path, procs: list[object], firehose: Firehose) -> None:
    rportd = start(tmp_path, procs, tunnel_write_timeout="1s")
    lport = free_port()
    agent = Agent(tmp_path, rportd.url, "c1:secret", "--id", "deaf",
                  remotes=(f"127.0.0.1:{lport}:127.0.0.1:{firehose.port}",))
    procs.append(agent.start())
    agent.wait_connected()
    user = silent_user(lport)
    wait_for(lambda: hung_up(user), 10, "the silent user cut off")
    wait_for(firehose.ended.is_set, 10, "the agent's side of the stream closed")
    user.close()
    assert client(rportd, "deaf")["connection_state"] == "connected"


def test_an_agent_requested_tunnel_on_an_excluded_port_is_refused(
        tmp_path: Path, procs: list[object]) -> None:
    lport = free_port()
    rportd = start(tmp_path, procs, excluded_ports=["1-1024", str(lport)])
    agent = Agent(tmp_path, rportd.url, "c1:secret", "--id", "greedy",
                  remotes=(f"127.0.0.1:{lport}:127.0.0.1:22",))
    procs.append(agent.start())
    assert agent.wait_exit() == 0
    assert f"can't create tunnel: local port {lport} is in excluded_ports" in agent.log_text()
    with socket.create_server(("127.0.0.1", lport)):
        pass  # never bound by rportd


def test_an_agent_requested_tunnel_must_bind_an_ip_address(
        tmp_path: Path, procs: list[object]) -> None:
    rportd = start(tmp_path, procs)
    agent = Agent(tmp_path, rportd.url, "c1:secret", "--id", "named",
                  remotes=(f"localhost:{free_port()}:127.0.0.1:22",))
    procs.append(agent.start())
    assert agent.wait_exit() == 0
    assert "can't create tunnel: local host 'localhost' is not an IP address" in agent.log_text()


def test_ipv6_targets_reach_the_agent_in_brackets(tmp_path: Path, procs: list[object]) -> None:
    rportd = start(tmp_path, procs)
    lport, rport = free_port(), free_port()
    agent = Agent(tmp_path, rportd.url, "c1:secret", "--id", "six",
                  remotes=(f"127.0.0.1:{lport}:[::1]:{rport}",))
    procs.append(agent.start())
    agent.wait_connected()
    with socket.create_connection(("127.0.0.1", lport), timeout=5) as user:
        user.settimeout(5)
        assert user.recv(10) == b""  # nothing listens there: the stream ends
    agent.wait_log(f"channel to [::1]:{rport}")  # the agent logs the target it was sent


def test_tunnel_ids_are_never_reused_and_survive_a_reconnect(
        tmp_path: Path, procs: list[object]) -> None:
    rportd = start(tmp_path, procs)
    agent = Agent(tmp_path, rportd.url, "c1:secret", "--id", "ids")
    procs.append(agent.start())
    agent.wait_connected()

    def put() -> str:
        made = http(rportd.api_port, "PUT", "/api/v1/clients/ids/tunnels?remote=22&check_port=0",
                    basic=ADMIN)
        assert made.status == 200, made.body
        return str(made.json()["data"]["id"])

    assert [put(), put()] == ["1", "2"]
    gone = http(rportd.api_port, "DELETE", "/api/v1/clients/ids/tunnels/2", basic=ADMIN)
    assert gone.status == 204
    assert put() == "3"
    agent.stop()
    wait_for(lambda: client(rportd, "ids")["connection_state"] == "disconnected",
             what="ids disconnected")
    again = Agent(tmp_path, rportd.url, "c1:secret", "--id", "ids", name="again")
    procs.append(again.start())
    again.wait_connected()
    assert [t["id"] for t in client(rportd, "ids")["tunnels"]] == ["1", "3"]
    assert put() == "4"
