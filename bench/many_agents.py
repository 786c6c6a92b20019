"""Many connected agents in one rportd: RSS per agent, and a reconnect storm after a restart.

    python bench/many_agents.py [--agents 10000]

One generator process holds N agent connections (our agent library: real WebSocket + SSH
handshakes + new_connection), all registered through one multi-use credential. It prints:
time to register all N, rportd's RSS growth per agent, then restarts rportd and times how long
until every agent is registered again, while probing GET /api/v1/status every 100 ms and
reporting the API's worst and p99 latency during the storm.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import free_port, rss_kib, start_rportd, stop, wait_port, workdir  # noqa: E402

from rportd.client.connection import AgentSettings, open_ssh, register  # noqa: E402
from rportd.client.websocket import parse_server  # noqa: E402

AUTH = {"Authorization": "Basic " + base64.b64encode(b"admin:bench-admin").decode()}


class Fleet:
    def __init__(self, server: str, count: int, parallel: int):
        self.settings = AgentSettings(parse_server(server), "fleet", "fleet-secret", keepalive=0)
        self.count = count
        self.gate = asyncio.Semaphore(parallel)  # the generator's own dialing pace
        self.registered: set[int] = set()
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self.tasks = [asyncio.create_task(self._agent(i)) for i in range(self.count)]

    async def _agent(self, index: int) -> None:
        request = json.dumps({"Version": "bench", "ID": f"agent-{index:05d}",
                              "Name": f"agent {index}", "OS": "Linux bench", "OSArch": "amd64",
                              "OSFamily": "debian", "OSKernel": "linux", "Hostname": f"h{index}",
                              "IPv4": ["192.0.2.1"], "IPv6": [], "Tags": ["bench"],
                              "Remotes": None}, separators=(",", ":")).encode()
        delay = 0.1
        while True:
            try:
                async with self.gate:
                    conn = await open_ssh(self.settings)
                    await register(conn, request)
            except Exception:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            delay = 0.1
            self.registered.add(index)
            await conn.wait_closed()
            self.registered.discard(index)

    async def wait_all(self, timeout: float) -> float:
        start = time.monotonic()
        while len(self.registered) < self.count:
            if time.monotonic() - start > timeout:
                raise SystemExit(f"only {len(self.registered)}/{self.count} registered "
                                 f"after {timeout:.0f}s")
            await asyncio.sleep(0.1)
        return time.monotonic() - start


async def probe_api(url: str, until: asyncio.Event) -> list[float]:
    """GET /status every 100 ms; returns latencies in ms (a failed request counts as 10 s)."""
    latencies = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        while not until.is_set():
            start = time.perf_counter()
            try:
                async with session.get(url, headers=AUTH) as response:
                    await response.read()
                    ok = response.status == 200
            except (aiohttp.ClientError, TimeoutError):
                ok = False
            latencies.append((time.perf_counter() - start) * 1000 if ok else 10_000)
            await asyncio.sleep(0.1)
    return latencies


async def run(count: int, parallel: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    tmp = workdir()
    agent_port, api_port = free_port(), free_port()
    config = f"""
[server]
address = "127.0.0.1:{agent_port}"
data_dir = "{tmp}/data"
auth = "fleet:fleet-secret"
keep_lost_clients = "1h"
allow_root = true
[api]
address = "127.0.0.1:{api_port}"
auth = "admin:bench-admin"
[logging]
log_level = "error"
"""
    rportd = start_rportd(config, tmp)
    wait_port(agent_port)
    wait_port(api_port)
    await asyncio.sleep(0.5)
    baseline = rss_kib(rportd.pid)
    fleet = Fleet(f"127.0.0.1:{agent_port}", count, parallel)
    fleet.start()
    first = await fleet.wait_all(600)
    await asyncio.sleep(2)
    loaded = rss_kib(rportd.pid)
    print(f"{count} agents registered in {first:.1f}s; rportd RSS {baseline / 1024:.0f} MiB idle, "
          f"{loaded / 1024:.0f} MiB with all connected: {(loaded - baseline) / count:.1f} KiB "
          f"per agent")

    done = asyncio.Event()
    stop(rportd)
    restart = time.monotonic()
    while fleet.registered and time.monotonic() - restart < 30:
        await asyncio.sleep(0.05)  # every agent has seen the server go
    rportd = start_rportd(config, tmp, "rportd-restart.log")
    try:
        wait_port(agent_port)
        wait_port(api_port)
        prober = asyncio.create_task(probe_api(f"http://127.0.0.1:{api_port}/api/v1/status",
                                               done))
        again = await fleet.wait_all(300)
        storm = time.monotonic() - restart
        done.set()
        latencies = sorted(await prober)
        async with aiohttp.ClientSession() as session, session.get(
                f"http://127.0.0.1:{api_port}/api/v1/status", headers=AUTH) as response:
            status = await response.json()
        print(f"restart: all {count} registered again {storm:.1f}s after the restart began "
              f"({again:.1f}s after the agent port reopened); server counts "
              f"{status['data']['clients_connected']} connected")
        answered = [x for x in latencies if x < 10_000] or [float("nan")]
        print(f"API during the storm: {len(latencies)} probes, {len(latencies) - len(answered)} "
              f"failed, median {statistics.median(answered):.1f} ms, p99 "
              f"{answered[int(len(answered) * 0.99) - 1]:.1f} ms, worst {max(answered):.1f} ms")
    finally:
        for task in fleet.tasks:
            task.cancel()
        stop(rportd)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--agents", type=int, default=10000)
    parser.add_argument("--parallel", type=int, default=200,
                        help="handshakes the generator runs at once")
    args = parser.parse_args()
    asyncio.run(run(args.agents, args.parallel))
    os._exit(0)  # skip tearing down thousands of connections one by one


if __name__ == "__main__":
    main()
