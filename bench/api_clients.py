"""GET /api/v1/clients for one 100-client tenant among 10,000 registered clients.

    python bench/api_clients.py [--tenants 100] [--per-tenant 100] [--seconds 10] [--connections 50]
                                [--group ops]

rportd runs multi-tenant on SQLite tables (bcrypt cost 12 users); its registry is seeded with
tenants x per-tenant clients through its own `clients` table, then loaded at start. Load comes
from wrk (apt-get install wrk) in a second process: once with a bearer token, once with repeated
basic auth, and with a personal token (`/me/tokens`, scope clients:read) where the server has
them. Prints requests/s and p50/p99 latency for each. `--group ops` puts the users in a group
granted `clients:read` (the permission check then reads grants) instead of `Administrators`.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import shutil
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import bcrypt

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import free_port, start_rportd, stop, wait_port, workdir  # noqa: E402


def seed(db: Path, tenants: int, per_tenant: int, group: str) -> None:
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    password = bcrypt.hashpw(b"bench-pw", bcrypt.gensalt(12)).decode()
    with sqlite3.connect(db) as conn:
        conn.executemany("INSERT INTO users (username, password, tenant) VALUES (?, ?, ?)",
                         [(f"user{t}", password, f"tenant{t}") for t in range(tenants)])
        conn.executemany("INSERT INTO groups (username, \"group\", tenant) VALUES (?, ?, ?)",
                         [(f"user{t}", group, f"tenant{t}") for t in range(tenants)])
        if group != "Administrators":
            conn.executemany("INSERT INTO group_permissions (tenant, \"group\", permissions) "
                             "VALUES (?, ?, ?)", [(f"tenant{t}", group, '["clients:read"]')
                                                  for t in range(tenants)])
        rows = []
        for t in range(tenants):
            for c in range(per_tenant):
                details = {"name": f"vm-{t}-{c}", "os": "Linux vm 6.1.0 x86_64 GNU/Linux",
                           "os_arch": "amd64", "os_family": "debian", "os_kernel": "linux",
                           "hostname": f"vm-{t}-{c}", "ipv4": [f"10.{t}.{c // 250}.{c % 250}"],
                           "ipv6": [], "tags": ["bench", f"t{t}"], "version": "0.9.12",
                           "address": "192.0.2.1"}
                tunnels = [{"id": "1", "lhost": "0.0.0.0", "lport": str(20000 + c),
                            "rhost": "127.0.0.1", "rport": "22", "lport_random": True,
                            "scheme": "ssh", "acl": None}]
                rows.append((f"tenant{t}", f"client-{c:04d}", f"auth{t}", json.dumps(details),
                             json.dumps(tunnels), now))
        conn.executemany("INSERT INTO clients (tenant, id, client_auth_id, details, tunnels, "
                         "disconnected_at) VALUES (?, ?, ?, ?, ?, ?)", rows)


def wrk(url: str, header: str, seconds: int, connections: int) -> tuple[float, str, str]:
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency",
                          "-H", header, url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = re.search(r"\s50%\s+(\S+)", out).group(1)  # type: ignore[union-attr]
    p99 = re.search(r"\s99%\s+(\S+)", out).group(1)  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise SystemExit(f"wrk saw {errors.group(1)} error responses:\n{out}")
    return rps, p50, p99


def _personal_token(api_port: int, basic: str) -> str:
    """A clients:read personal token, or '' when the server has no /me/tokens."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{api_port}/api/v1/me/tokens", method="POST",
        data=b'{"scopes": ["clients:read"]}',
        headers={"Authorization": basic, "Content-Type": "application/json"})
    try:
        return str(json.load(urllib.request.urlopen(request))["data"]["token"])
    except urllib.error.HTTPError:
        return ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument("--per-tenant", type=int, default=100)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--group", default="Administrators")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed: apt-get install wrk")
    tmp = workdir()
    db = tmp / "rportd.db"
    agent_port, api_port = free_port(), free_port()
    config = f"""
[server]
address = "127.0.0.1:{agent_port}"
data_dir = "{tmp}/data"
auth_table = "clients_auth"
multi_tenancy = true
keep_lost_clients = "168h"
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
    seed(db, args.tenants, args.per_tenant, args.group)
    rportd = start_rportd(config, tmp)
    try:
        wait_port(api_port, 60)
        url = f"http://127.0.0.1:{api_port}/api/v1/clients"
        basic = "Basic " + base64.b64encode(b"user7:bench-pw").decode()
        request = urllib.request.Request(f"http://127.0.0.1:{api_port}/api/v1/login",
                                         headers={"Authorization": basic})
        token = json.load(urllib.request.urlopen(request))["data"]["token"]
        check = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
        body = json.load(urllib.request.urlopen(check))
        assert len(body["data"]) == args.per_tenant, len(body["data"])
        print(f"GET /api/v1/clients: {args.per_tenant}-client tenant among "
              f"{args.tenants * args.per_tenant} clients, {args.connections} connections, "
              f"{args.seconds}s, wrk -t1 on the same 2 cores")
        runs = [("bearer token", f"Authorization: Bearer {token}"),
                ("basic auth  ", f"Authorization: {basic}")]
        personal = _personal_token(api_port, basic)
        if personal:
            runs.append(("personal tok", f"Authorization: Bearer {personal}"))
        for label, header in runs:
            rps, p50, p99 = wrk(url, header, args.seconds, args.connections)
            print(f"  {label}: {rps:8.0f} req/s   p50 {p50:>8}   p99 {p99:>8}")
    finally:
        stop(rportd)


if __name__ == "__main__":
    main()
