"""Real rport data directories for import tests: SQLite files made from rport's published
migrations (tests/rport_schema/), filled the way rport's server writes them."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA = Path(__file__).resolve().parent / "rport_schema"

# (file, migrations) per rport layout; openrport adds its later migrations on top of 0.1.24's.
LAYOUTS: dict[str, dict[str, tuple[str, ...]]] = {
    "0.1.22": {"client_sessions.db": ("client_sessions_001_init.0.1.22.up.sql",),
               "jobs.db": ("jobs_001_init.0.1.22.up.sql",),
               "client_groups.db": ("client_groups_001_init.up.sql",)},
    "0.1.24": {"clients.db": ("clients_001_init.up.sql",),
               "jobs.db": ("jobs_001_init.up.sql",),
               "client_groups.db": ("client_groups_001_init.up.sql",)},
    "openrport": {"clients.db": ("clients_001_init.up.sql",
                                 "openrport_clients_002_stored_tunnels.up.sql",
                                 "openrport_clients_003_add_tunnel_fields.up.sql"),
                  "jobs.db": ("jobs_001_init.up.sql", "openrport_jobs_002_schedules.up.sql",
                              "openrport_jobs_003_multi_job_schedule_id.up.sql"),
                  "client_groups.db": ("client_groups_001_init.up.sql",
                                       "openrport_client_groups_002_add_allowed_user_groups.up.sql")},
}


def tunnel_json(tunnel_id: str, lport: int, rport: int) -> dict[str, Any]:
    """A tunnel as rport's Go structs marshal it (Remote's fields, then the id)."""
    return {"lhost": "0.0.0.0", "lport": str(lport), "rhost": "127.0.0.1", "rport": str(rport),
            "lport_random": False, "scheme": None, "acl": None, "id": tunnel_id}


@dataclass
class RportClient:
    id: str
    auth_id: str
    name: str
    tunnels: list[dict[str, Any]] = field(default_factory=list)
    disconnected_at: str | None = "2021-02-20 10:11:12.123456789+00:00"

    def details(self) -> str:
        return json.dumps({"name": self.name, "os": "Linux x86_64", "os_arch": "amd64",
                           "os_family": "debian", "os_kernel": "linux", "hostname": self.name,
                           "version": "0.1.24", "address": "192.0.2.7:51000",
                           "ipv4": ["192.0.2.7"], "ipv6": [], "tags": ["imported"],
                           "tunnels": self.tunnels})


def _open(path: Path, migrations: tuple[str, ...]) -> sqlite3.Connection:
    conn = sqlite3.connect(path)
    for name in migrations:
        conn.executescript((SCHEMA / name).read_text())
    return conn


def _go_time(text: str | None) -> str | None:
    """Go's JSON time (RFC 3339) for the SQLite text rport's database layer writes."""
    return None if text is None else text.replace(" ", "T").replace("+00:00", "Z")


def make_files_data_dir(root: Path, clients: list[RportClient], jobs: int) -> Path:
    """rport up to 0.1.21: `csr.json` (sessions, `client` = the credential) and one JSON file per
    finished job under jobs/<sha1(session id)>/ (named by status prefix and jid)."""
    sessions = []
    for c in clients:
        session = {"id": c.id, **json.loads(c.details()), "client": c.auth_id}
        if c.disconnected_at is not None:
            session["disconnected"] = _go_time(c.disconnected_at)
        sessions.append(session)
    root.mkdir(parents=True, exist_ok=True)
    (root / "csr.json").write_text(json.dumps(sessions, indent="\t"))
    folder = root / "jobs" / hashlib.sha1(clients[0].id.encode()).hexdigest()
    folder.mkdir(parents=True)
    for n in range(jobs):
        job = {"jid": f"job-{n}", "status": "successful", "finished_at": "2021-02-19T09:00:01Z",
               "sid": clients[0].id, "command": "uptime", "shell": "", "pid": 42,
               "started_at": "2021-02-19T09:00:00.5Z", "created_by": "admin", "timeout_sec": 60,
               "result": {"stdout": f"up {n} days", "stderr": ""}}
        (folder / f"s_job-{n}.json").write_text(json.dumps(job))
    return root


def make_data_dir(root: Path, layout: str, clients: list[RportClient], jobs: int = 2,
                  groups: tuple[str, ...] = ("web",)) -> Path:
    """An rport data_dir with these clients, `jobs` single-client jobs (and one multi-job) per
    first client, and client groups."""
    if layout == "0.1.21":
        return make_files_data_dir(root, clients, jobs)
    root.mkdir(parents=True, exist_ok=True)
    files = LAYOUTS[layout]
    old = layout == "0.1.22"
    clients_file = "client_sessions.db" if old else "clients.db"
    with _open(root / clients_file, files[clients_file]) as conn:
        table, auth, lost = (("client_sessions", "client_id", "disconnected") if old
                             else ("clients", "client_auth_id", "disconnected_at"))
        conn.executemany(f"INSERT INTO {table} (id, {auth}, {lost}, details) VALUES (?, ?, ?, ?)",
                         [(c.id, c.auth_id, c.disconnected_at, c.details()) for c in clients])
    client_column = "sid" if old else "client_id"
    with _open(root / "jobs.db", files["jobs.db"]) as conn:
        conn.execute("INSERT INTO multi_jobs (jid, started_at, created_by, details) VALUES "
                     "(?, ?, ?, ?)", ("mj-1", "2021-02-19 09:00:00+00:00", "admin",
                                      json.dumps({"jid": "mj-1", "command": "uptime"})))
        for n in range(jobs):
            details = {"jid": f"job-{n}", "status": "successful", client_column: clients[0].id,
                       "command": "uptime", "result": {"stdout": f"up {n} days"}}
            conn.execute(f"INSERT INTO jobs (jid, status, started_at, finished_at, created_by, "
                         f"{client_column}, multi_job_id, details) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                         (f"job-{n}", "successful", "2021-02-19 09:00:00.5+00:00",
                          "2021-02-19 09:00:01+00:00", "admin", clients[0].id,
                          "mj-1" if n == 0 else None, json.dumps(details)))
    with _open(root / "client_groups.db", files["client_groups.db"]) as conn:
        conn.executemany("INSERT INTO client_groups (id, description, params) VALUES (?, ?, ?)",
                         [(g, f"group {g}", json.dumps({"client_id": [clients[0].id]}))
                          for g in groups])
    return root


def write_auth_files(root: Path, credentials: dict[str, str],
                     users: list[dict[str, Any]]) -> tuple[Path, Path]:
    """rport's client auth file (id -> password) and API users file (bcrypt, groups)."""
    clients, api = root / "client-auth.json", root / "api-auth.json"
    clients.write_text(json.dumps(credentials, indent=4))
    api.write_text(json.dumps(users, indent=4))
    return clients, api
