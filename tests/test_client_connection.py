"""Our agent's wire patterns: the Go-client flow control mode (for benchmarks) carries a tunnel
byte for byte in both directions, through real rportd and real `rport` processes."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import asyncssh
import pytest

from rportd.client.connection import AgentSettings, connect_once
from rportd.client.websocket import parse_server
from rportd.tunnel_spec import parse_remote_spec
from rportd.wire.asyncssh_internals import MAX_PACKET

from .helpers import free_port
from .processes import Agent, Rportd, port_open, wait_for
from .test_agents import EchoTarget, carry


def test_go_wire_pattern_carries_a_tunnel_both_ways(tmp_path: Path, procs: list[object]) -> None:
    rportd = Rportd(tmp_path, {"server": {"auth": "c1:secret"}}).start()
    procs.append(rportd)
    target = EchoTarget()
    lport = free_port()
    agent = Agent(tmp_path, rportd.url, "c1:secret", "--id", "go1", "--wire-pattern", "go",
                  remotes=(f"127.0.0.1:{lport}:127.0.0.1:{target.port}",))
    procs.append(agent.start())
    try:
        agent.wait_connected()
        wait_for(lambda: port_open(lport), what="the tunnel's port")
        size = 8 << 20  # four times the 2 MiB window: every byte needs window adjusts
        sent, got = carry(lport, size)
        assert sent == got
        assert target.count == size
    finally:
        target.close()


async def test_go_wire_pattern_adjusts_the_window_after_every_packet(
        tmp_path: Path, procs: list[object], caplog: pytest.LogCaptureFixture) -> None:
    """What the benchmark's Go-pattern load claims: one WINDOW_ADJUST per data packet of at most
    32 KiB, where asyncssh's own pattern sends one per megabyte (half the 2 MiB window)."""
    rportd = Rportd(tmp_path, {"server": {"auth": "c1:secret"}}).start()
    procs.append(rportd)
    target = EchoTarget()
    lport = free_port()
    settings = AgentSettings(parse_server(rportd.url), "c1", "secret", client_id="go2",
                             keepalive=0, wire_pattern="go",
                             remotes=[parse_remote_spec(
                                 f"127.0.0.1:{lport}:127.0.0.1:{target.port}").to_json()])
    caplog.set_level(logging.DEBUG, logger="asyncssh")
    asyncssh.set_debug_level(2)
    conn, _ = await connect_once(settings)
    try:
        size = 4 << 20
        reader, writer = await asyncio.open_connection("127.0.0.1", lport)
        writer.write(os.urandom(size))
        await asyncio.wait_for(reader.readexactly(size), 30)  # the echo: all of it went through
        writer.close()
    finally:
        asyncssh.set_debug_level(1)
        conn.close()
        target.close()
    adjusts = [r for r in caplog.records if "Go-pattern window adjust" in r.getMessage()]
    assert len(adjusts) >= size // MAX_PACKET, len(adjusts)
