"""Our agent's wire patterns: the Go-client flow control mode (for benchmarks) carries a tunnel
byte for byte in both directions, through real rportd and real `rport` processes."""

from __future__ import annotations

from pathlib import Path

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
