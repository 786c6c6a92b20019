"""Remote commands end to end: one rportd (SQLite), N of our agents, commands over /ws/commands.

    python bench/commands.py [--agents 4] [--rounds 30]

Prints the time from sending a command request on the WebSocket to receiving its job (run_cmd,
`/bin/sh -c /usr/bin/true` on the agent, cmd_result, the job persisted, then streamed), for one
client and for a concurrent and a sequential multi-client job over all N agents; then rportd's
RSS after the rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import free_port, rss_kib, start_rportd, stop, wait_port, workdir  # noqa: E402

AUTH = {"Authorization": "Basic " + base64.b64encode(b"admin:bench-admin").decode()}


async def _until_connected(api: str, count: int) -> None:
    async with aiohttp.ClientSession(headers=AUTH) as session:
        for _ in range(400):
            async with session.get(f"{api}/api/v1/clients") as answer:
                clients = (await answer.json())["data"]
            if sum(c["connection_state"] == "connected" for c in clients) >= count:
                return
            await asyncio.sleep(0.05)
    raise SystemExit("agents did not connect")


async def _round(session: aiohttp.ClientSession, url: str, request: dict[str, object],
                 expected: int) -> float:
    started = time.perf_counter()
    async with session.ws_connect(url) as ws:
        await ws.send_str(json.dumps(request))
        jobs = [json.loads(m.data) async for m in ws]
    elapsed = time.perf_counter() - started
    if len(jobs) != expected or any(j.get("status") != "successful" for j in jobs):
        raise SystemExit(f"unexpected answer: {jobs}")
    return elapsed


def _report(name: str, seconds: list[float]) -> None:
    ms = sorted(s * 1000 for s in seconds)
    print(f"{name:<34} p50 {statistics.median(ms):7.1f} ms   max {ms[-1]:7.1f} ms")


async def bench(api: str, agents: int, rounds: int) -> None:
    await _until_connected(api, agents)
    ids = [f"bench-{i}" for i in range(agents)]
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{api}/api/v1/login", headers=AUTH) as answer:
            token = (await answer.json())["data"]["token"]
        url = f"{api}/api/v1/ws/commands?access_token={token}"
        cases = (("one client", {"client_ids": ids[:1]}, 1),
                 (f"{agents} clients at once", {"client_ids": ids,
                                                "execute_concurrently": True}, agents),
                 (f"{agents} clients in turn", {"client_ids": ids}, agents))
        for name, targets, expected in cases:
            request = {"command": "/usr/bin/true", "timeout_sec": 10, **targets}
            _report(name, [await _round(session, url, request, expected) for _ in range(rounds)])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--agents", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    tmp = workdir()
    agent_port, api_port = free_port(), free_port()
    rportd = start_rportd(f"""[server]
address = "127.0.0.1:{agent_port}"
auth = "bench:bench"
data_dir = "{tmp}/data"
allow_root = true
[api]
address = "127.0.0.1:{api_port}"
auth = "admin:bench-admin"
""", tmp)
    agents = []
    try:
        wait_port(agent_port)
        wait_port(api_port)
        agents = [subprocess.Popen([sys.executable, "-m", "rportd.client.cli", "--auth",
                                    "bench:bench", "--id", f"bench-{i}",
                                    f"127.0.0.1:{agent_port}"], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL) for i in range(args.agents)]
        asyncio.run(bench(f"http://127.0.0.1:{api_port}", args.agents, args.rounds))
        print(f"rportd RSS after {3 * args.rounds} rounds: {rss_kib(rportd.pid) / 1024:.1f} MiB")
    finally:
        for agent in agents:
            stop(agent)
        stop(rportd)


if __name__ == "__main__":
    main()
