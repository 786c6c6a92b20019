"""Agent port under abuse: legitimate agent login latency and API latency while strangers hold
N idle, slow or password-guessing connections, and rportd's RSS with N idle connections.

    python bench/agent_port_abuse.py [--idle 200,1000,3000] [--slow 200] [--guessers 32]
                                     [--logins 20] [--settle 2]

For each load: strangers open their connections (idle: TCP connect, then silence; slow: the
WebSocket upgrade request one byte per second; guessers: full upgrade and SSH handshakes with
wrong passwords, in a loop); then `--logins` legitimate agents log in one after another, each
timed from TCP connect to registered (new_connection answered), while GET /api/v1/status is
probed every 50 ms (at least --api-probes times). Prints, from this run only: p50/p99 login
latency, failed logins, API p50/p99, strangers still connected at the end, and rportd's RSS
before and with the load.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import json
import resource
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import free_port, rss_kib, start_rportd, stop, wait_port, workdir  # noqa: E402

from rportd.client.connection import AgentSettings, open_ssh, register  # noqa: E402
from rportd.client.websocket import parse_server  # noqa: E402

API_AUTH = {"Authorization": "Basic " + base64.b64encode(b"admin:bench-admin").decode()}
UPGRADE = (b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: rport 0.9.12\r\n"
           b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
           b"Sec-WebSocket-Protocol: rport-v1\r\nSec-WebSocket-Version: 13\r\n"
           b"Upgrade: websocket\r\n\r\n")


def stranger_address(index: int) -> str:
    """Strangers come from 127.1.x.y, 200 per address (under the per-address cap), never from
    the legitimate agents' 127.0.0.1, as on the internet."""
    return f"127.1.{index // 200}.{index % 200 + 1}"


class Strangers:
    """N connections held by someone who is not an agent; counts how many are still open."""

    def __init__(self) -> None:
        self.open = 0
        self.opened = 0
        self.tasks: list[asyncio.Task[None]] = []

    def start(self, count: int, behave: Callable[[asyncio.StreamReader, asyncio.StreamWriter],
                                                 Awaitable[None]], port: int) -> None:
        self.tasks = [asyncio.create_task(self._one(behave, port, stranger_address(index)))
                      for index in range(count)]

    async def _one(self, behave: Callable[[asyncio.StreamReader, asyncio.StreamWriter],
                                          Awaitable[None]], port: int, source: str) -> None:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port,
                                                           local_addr=(source, 0))
        except OSError:
            return
        self.open += 1
        self.opened += 1
        try:
            await behave(reader, writer)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self.open -= 1
            writer.close()

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def idle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read()  # returns when the server hangs up


async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    for byte in itertools.cycle(UPGRADE):
        writer.write(bytes([byte]))
        await writer.drain()
        try:
            if await asyncio.wait_for(reader.read(1), 1.0) == b"":
                return  # hung up on us
        except TimeoutError:
            pass


async def guess(settings: AgentSettings, stop_at: asyncio.Event, counts: Counter[str]) -> None:
    """Wrong passwords in a loop, each a new connection (asyncssh tries one password each)."""
    while not stop_at.is_set():
        try:
            conn = await open_ssh(settings)
            conn.close()
            counts["accepted?!"] += 1
        except Exception as exc:  # refused, banned, hung up: all count as one guess
            counts[type(exc).__name__] += 1
            await asyncio.sleep(0)


async def logins(server: str, count: int) -> tuple[list[float], int]:
    """Legitimate agents one after another: seconds from TCP connect to registered."""
    times, failed = [], 0
    for index in range(count):
        settings = AgentSettings(parse_server(server), "bench", "bench-pw",
                                 client_id=f"legit-{index}", keepalive=0)
        request = json.dumps({"Version": "bench", "ID": settings.client_id, "Name": "legit",
                              "OS": "Linux", "OSArch": "amd64", "OSFamily": "debian",
                              "OSKernel": "linux", "Hostname": "legit", "IPv4": [], "IPv6": [],
                              "Tags": [], "Remotes": None}).encode()
        start = time.perf_counter()
        try:
            conn = await asyncio.wait_for(open_ssh(settings), 60)
            await asyncio.wait_for(register(conn, request), 60)
        except Exception:
            failed += 1
            continue
        times.append(time.perf_counter() - start)
        conn.close()
        await conn.wait_closed()
    return times, failed


async def probe_api(url: str, until: asyncio.Event, at_least: int) -> list[float]:
    """GET /status every 50 ms until `until` is set and `at_least` probes are done; seconds
    each (a failure counts as 10 s)."""
    latencies: list[float] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        while not until.is_set() or len(latencies) < at_least:
            start = time.perf_counter()
            try:
                async with session.get(url, headers=API_AUTH) as response:
                    await response.read()
                    ok = response.status == 200
            except (aiohttp.ClientError, TimeoutError):
                ok = False
            latencies.append(time.perf_counter() - start if ok else 10.0)
            await asyncio.sleep(0.05)
    return latencies


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


async def scenario(label: str, start_load: Callable[[], Awaitable[Callable[[], str]]],
                   ports: tuple[int, int], pid: int, args: argparse.Namespace,
                   connections: int = 0) -> None:
    agent_port, api_port = ports
    before = rss_kib(pid)
    describe = await start_load()
    await asyncio.sleep(args.settle)
    loaded = rss_kib(pid)
    done = asyncio.Event()
    prober = asyncio.create_task(probe_api(f"http://127.0.0.1:{api_port}/api/v1/status", done,
                                           args.api_probes))
    times, failed = await logins(f"127.0.0.1:{agent_port}", args.logins)
    done.set()
    api = await prober
    print(f"{label}: {describe()}")
    print(f"    agent login (connect -> registered), {args.logins} in a row: "
          f"p50 {pct(times, 0.5) * 1000:.0f} ms, p99 {pct(times, 0.99) * 1000:.0f} ms, "
          f"{failed} failed")
    print(f"    API GET /status every 50 ms: {len(api)} probes, p50 {pct(api, 0.5) * 1000:.1f} "
          f"ms, p99 {pct(api, 0.99) * 1000:.1f} ms, {sum(x >= 10 for x in api)} failed")
    each = f" ({(loaded - before) / connections:.1f} KiB per connection)" if connections else ""
    print(f"    rportd RSS {before / 1024:.0f} MiB before, {loaded / 1024:.0f} MiB with the load"
          f"{each}")


def _quiet_abandoned(loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
    """Guessers cancelled mid-handshake leave futures holding a ConnectionError: not news."""
    if isinstance(context.get("exception"), ConnectionError):
        return
    loop.default_exception_handler(context)


async def run(args: argparse.Namespace) -> None:
    asyncio.get_running_loop().set_exception_handler(_quiet_abandoned)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # rportd inherits it
    tmp = workdir()
    agent_port, api_port = free_port(), free_port()
    rportd = start_rportd(f"""
[server]
address = "127.0.0.1:{agent_port}"
data_dir = "{tmp}/data"
auth = "bench:bench-pw"
keep_lost_clients = "1h"
allow_root = true
[api]
address = "127.0.0.1:{api_port}"
auth = "admin:bench-admin"
[logging]
log_level = "error"
""", tmp)
    ports = (agent_port, api_port)
    try:
        wait_port(agent_port)
        wait_port(api_port)
        await asyncio.sleep(0.5)
        await scenario("no strangers", _nothing, ports, rportd.pid, args)
        for count in args.idle:
            await _held(f"{count} idle connections", count, idle, ports, rportd.pid, args)
        if args.slow:
            await _held(f"{args.slow} slow upgrades (1 byte/s)", args.slow, slow, ports,
                        rportd.pid, args)
        if args.guessers:
            await _guessing(args.guessers, ports, rportd.pid, args)
    finally:
        stop(rportd)


async def _nothing() -> Callable[[], str]:
    return lambda: "baseline"


async def _held(label: str, count: int, behave: Callable[[asyncio.StreamReader,
                                                         asyncio.StreamWriter], Awaitable[None]],
                ports: tuple[int, int], pid: int, args: argparse.Namespace) -> None:
    strangers = Strangers()

    async def load() -> Callable[[], str]:
        strangers.start(count, behave, ports[0])
        return lambda: (f"{strangers.opened}/{count} connected, "
                        f"{strangers.open} still open after the logins")

    try:
        await scenario(label, load, ports, pid, args, count)
    finally:
        await strangers.stop()


async def _guessing(count: int, ports: tuple[int, int], pid: int,
                    args: argparse.Namespace) -> None:
    stop_at = asyncio.Event()
    counts: Counter[str] = Counter()
    tasks: list[asyncio.Task[None]] = []
    started = time.monotonic()

    def settings(index: int) -> AgentSettings:  # each guesser from its own address
        return AgentSettings(parse_server(f"127.0.0.1:{ports[0]}"), "bench", "wrong-pw",
                             keepalive=0, source_address=f"127.2.0.{index + 1}")

    async def load() -> Callable[[], str]:
        tasks.extend(asyncio.create_task(guess(settings(index), stop_at, counts))
                     for index in range(count))
        return lambda: (f"{count} guessers, {sum(counts.values())} guesses in "
                        f"{time.monotonic() - started:.0f} s ({dict(counts)})")

    try:
        await scenario(f"{count} password guessers", load, ports, pid, args)
    finally:
        stop_at.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--idle", default="200,1000,3000",
                        help="idle-connection counts to try, comma-separated")
    parser.add_argument("--slow", type=int, default=200, help="slow upgrades (0: skip)")
    parser.add_argument("--guessers", type=int, default=32,
                        help="concurrent password guessers (0: skip)")
    parser.add_argument("--logins", type=int, default=20, help="legitimate logins per load")
    parser.add_argument("--api-probes", type=int, default=20,
                        help="API probes per load, at least")
    parser.add_argument("--settle", type=float, default=2.0,
                        help="seconds between starting a load and measuring")
    args = parser.parse_args()
    args.idle = [int(n) for n in args.idle.split(",") if n]
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
