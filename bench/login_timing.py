"""Existence oracle by timing: median latency of a failed login for an unknown name vs a known
name with a wrong password, on the API and on the agent port (bcrypt cost 12 tables).

    python bench/login_timing.py [--rounds 20] [--cost 12]

rportd runs multi-tenant on SQLite tables seeded with `--rounds` users and client credentials
(bcrypt). Each round tries one unknown and one known name (a fresh name each time, so per-name
throttles never engage); API requests come from a fresh 127.x.y.z source address each, so
per-address throttles do not either; agent-port attempts too. They are timed from TCP connect to the
refusal. Prints both medians, the status/outcome counts and the ratio known/unknown (1.00 means
no difference; issue 8 asks for less than 20 %).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import http.client
import sqlite3
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import bcrypt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import free_port, start_rportd, stop, wait_port, workdir  # noqa: E402

from rportd.client.connection import AgentSettings, open_ssh  # noqa: E402
from rportd.client.websocket import parse_server  # noqa: E402


def seed(db: Path, rounds: int, cost: int) -> None:
    hashed = bcrypt.hashpw(b"the-right-password", bcrypt.gensalt(cost)).decode()
    with sqlite3.connect(db) as conn:
        conn.executemany("INSERT INTO users (username, password, tenant) VALUES (?, ?, ?)",
                         [(f"known{i}", hashed, "t1") for i in range(rounds + 1)])
        conn.executemany("INSERT INTO groups (username, \"group\", tenant) VALUES (?, ?, ?)",
                         [(f"known{i}", "Administrators", "t1") for i in range(rounds + 1)])
        conn.executemany("INSERT INTO clients_auth (id, password, tenant) VALUES (?, ?, ?)",
                         [(f"known-client{i}", hashed, "t1") for i in range(rounds + 1)])


def api_attempt(port: int, username: str, source: int) -> tuple[float, int]:
    """One GET /api/v1/login with a wrong password from 127.<source>: seconds and status."""
    address = f"127.{1 + source // 250 % 250}.{source % 250 + 1}.1"
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30, source_address=(address, 0))
    auth = base64.b64encode(f"{username}:wrong-password".encode()).decode()
    start = time.perf_counter()
    try:
        conn.request("GET", "/api/v1/login", headers={"Authorization": f"Basic {auth}"})
        response = conn.getresponse()
        response.read()
        return time.perf_counter() - start, response.status
    finally:
        conn.close()


async def agent_attempt(port: int, auth_id: str, source: int) -> tuple[float, str]:
    """One agent login with a wrong password from 127.<source> (the agent port bans an address
    after max_failed_login failures): seconds from TCP connect to the refusal."""
    address = f"127.{1 + source // 250 % 250}.{source % 250 + 1}.2"
    settings = AgentSettings(parse_server(f"127.0.0.1:{port}"), auth_id, "wrong-password",
                             keepalive=0, source_address=address)
    start = time.perf_counter()
    try:
        conn = await asyncio.wait_for(open_ssh(settings), 60)
        conn.close()
        outcome = "accepted?!"
    except Exception as exc:
        outcome = f"{type(exc).__name__}: {exc}"[:60]
    return time.perf_counter() - start, outcome


def report(where: str, unknown: list[tuple[float, object]],
           known: list[tuple[float, object]]) -> None:
    u = statistics.median(t for t, _ in unknown)
    k = statistics.median(t for t, _ in known)
    print(f"{where}:")
    print(f"    unknown name:               median {u * 1000:8.1f} ms   "
          f"{dict(Counter(str(o) for _, o in unknown))}")
    print(f"    known name, wrong password: median {k * 1000:8.1f} ms   "
          f"{dict(Counter(str(o) for _, o in known))}")
    print(f"    ratio known/unknown: {k / u:.2f}")


async def run(args: argparse.Namespace) -> None:
    tmp = workdir()
    db = tmp / "rportd.db"
    agent_port, api_port = free_port(), free_port()
    config = f"""
[server]
address = "127.0.0.1:{agent_port}"
data_dir = "{tmp}/data"
auth_table = "clients_auth"
multi_tenancy = true
allow_root = true
[api]
address = "127.0.0.1:{api_port}"
auth_user_table = "users"
auth_group_table = "groups"
[database]
db_type = "sqlite"
db_name = "{db}"
[logging]
log_level = "error"
"""
    (tmp / "rportd.conf").write_text(config)
    subprocess.run([sys.executable, "-m", "rportd.cli", "migrate", "-c", str(tmp / "rportd.conf")],
                   check=True, capture_output=True)
    seed(db, args.rounds, args.cost)
    rportd = start_rportd(config, tmp)
    try:
        wait_port(api_port, 60)
        wait_port(agent_port, 60)
        api_attempt(api_port, f"known{args.rounds}", 0)  # warm-up: first bcrypt, first thread
        await agent_attempt(agent_port, f"known-client{args.rounds}", 999)
        api_unknown, api_known = [], []
        for i in range(args.rounds):
            api_unknown.append(api_attempt(api_port, f"nobody{i}", 1 + 2 * i))
            api_known.append(api_attempt(api_port, f"known{i}", 2 + 2 * i))
        agent_unknown, agent_known = [], []
        for i in range(args.rounds):
            agent_unknown.append(await agent_attempt(agent_port, f"nobody-client{i}", 2 * i))
            agent_known.append(await agent_attempt(agent_port, f"known-client{i}", 2 * i + 1))
        print(f"failed logins, {args.rounds} of each kind, bcrypt cost {args.cost}, one at a time")
        report("API GET /api/v1/login (basic auth)", api_unknown, api_known)
        report("agent port (WebSocket + SSH password auth)", agent_unknown, agent_known)
    finally:
        stop(rportd)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20, help="attempts of each kind")
    parser.add_argument("--cost", type=int, default=12, help="bcrypt cost of the seeded rows")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
