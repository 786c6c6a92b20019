"""Reading what a standalone rport server keeps, as rows of rportd's tenant-owned tables.

rport's data directory (`[server] data_dir`) holds SQLite files made by its migrations:
- `clients.db`, table `clients (id, client_auth_id, disconnected_at, details)` from rport 0.1.24
  on (and openrport); before, `client_sessions.db`, table `client_sessions (id, client_id,
  disconnected, details)` (0.1.22), where `client_id` was the credential. A client's tunnels
  are the `tunnels` list inside the `details` JSON.
- `jobs.db`: `multi_jobs (jid, started_at, created_by, details)` and `jobs (jid, status,
  started_at, finished_at, created_by, client_id, multi_job_id, details)`; 0.1.22 named the
  client column `sid`.
- `client_groups.db`: `client_groups (id, description, params)`.
Before 0.1.22 (no SQLite yet) clients were a JSON list in `csr.json` (`{"id", ..., "tunnels",
"disconnected", "client"}`, `client` being the credential) and finished jobs one JSON file each
under `jobs/<sha1 of the client id>/` (`{"jid", "status", "sid", "started_at", "finished_at",
"created_by", ...}`).
Its client credentials are a JSON map `{"id": "password"}` (`auth_file`) or a table `(id,
password)`; its API users a JSON list `[{"username", "password" (bcrypt), "groups": [...]}]`
(`[api] auth_file`) or the tables `users (username, password)` and `groups (username, group)`.
"""

from __future__ import annotations

import json
import re
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import BadRequest, TransferRefused
from ..store import Store
from ..tunnel_spec import Remote
from .places import Record

__all__ = ["read_data_dir", "read_clients_auth_file", "read_api_auth_file", "read_auth_tables",
           "iso_time"]

_NANOS = re.compile(r"(\.\d{6})\d+")


def iso_time(value: Any, default: str | None = None) -> str | None:
    """rport's DATETIME text (Go's `2006-01-02 15:04:05.999999999-07:00`) as ISO 8601 UTC."""
    if value in (None, ""):
        return default
    text = _NANOS.sub(r"\1", str(value).strip().replace("Z", "+00:00"))
    text = re.sub(r" ([+-]\d\d:\d\d)$", r"\1", text)  # "... +0000 UTC" style is not rport's
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise TransferRefused(f"cannot read the time {value!r} in the rport data") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    spec = "microseconds" if moment.microsecond else "seconds"
    return moment.astimezone(UTC).isoformat(timespec=spec).replace("+00:00", "Z")


def _connect(path: Path) -> sqlite3.Connection:
    try:
        return sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise TransferRefused(f"cannot open {path}: {exc}") from None


def _table(path: Path, table: str) -> list[dict[str, Any]] | None:
    """All rows of `table` in the SQLite file as dicts; None when file or table is missing."""
    if not path.exists():
        return None
    conn = _connect(path)
    try:
        conn.row_factory = sqlite3.Row
        found = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                             (table,)).fetchone()
        if found is None:
            return None
        return [dict(row) for row in conn.execute(f'SELECT * FROM "{table}"')]
    except sqlite3.Error as exc:
        raise TransferRefused(f"cannot read table {table} of {path}: {exc}") from None
    finally:
        conn.close()


def _tunnels(client_id: str, raw: Any, notes: list[str]) -> list[dict[str, Any]]:
    kept = []
    for item in raw if isinstance(raw, list) else []:
        try:
            remote = Remote.from_json(item)
        except BadRequest as exc:
            notes.append(f"client {client_id!r}: a tunnel is not imported: {exc.detail}")
            continue
        kept.append({"id": str(item.get("id", "")), **remote.to_json()})
    return kept


def _next_id(tunnels: list[dict[str, Any]]) -> int:
    return max([0, *[int(t["id"]) for t in tunnels if t["id"].isdigit()]]) + 1


def _client(row: dict[str, Any], auth_column: str, lost_column: str,
            notes: list[str]) -> Record:
    """rportd's client row. A client rport had as connected keeps disconnected_at NULL: rportd
    marks it lost at its next start, as after its own restart (keep_lost_clients counts from
    then, not from the day rport stopped)."""
    details = json.loads(row["details"])
    client_id = str(row["id"])
    tunnels = _tunnels(client_id, details.pop("tunnels", None), notes)
    for ignored in ("id", "client_auth_id", "disconnected_at", "connection_state",
                    "disconnected", "client"):
        details.pop(ignored, None)
    return {"id": client_id, "client_auth_id": str(row[auth_column]),
            "details": json.dumps(details), "tunnels": json.dumps(tunnels),
            "disconnected_at": iso_time(row.get(lost_column)),
            "next_tunnel_id": _next_id(tunnels)}


def _clients(data_dir: Path, notes: list[str]) -> list[Record]:
    for file, table, auth, lost in (("clients.db", "clients", "client_auth_id", "disconnected_at"),
                                    ("client_sessions.db", "client_sessions", "client_id",
                                     "disconnected")):  # the second: rport 0.1.22
        rows = _table(data_dir / file, table)
        if rows is not None:
            return [_client(r, auth, lost, notes) for r in rows]
    return _csr_clients(data_dir / "csr.json", notes)


def _csr_clients(path: Path, notes: list[str]) -> list[Record]:
    """rport up to 0.1.21: the client session repository file."""
    if not path.exists():
        return []
    sessions = _json_file(path)
    if not isinstance(sessions, list):
        raise TransferRefused(f"{path} is not rport's csr.json (a JSON list of clients)")
    rows = [{"id": s.get("id"), "client_id": s.get("client") or "",
             "disconnected": s.get("disconnected"), "details": json.dumps(s)}
            for s in sessions if isinstance(s, dict)]
    return [_client(r, "client_id", "disconnected", notes) for r in rows]


def _file_jobs(jobs_dir: Path) -> list[Record]:
    """rport up to 0.1.21: one JSON file per finished job, a directory per client."""
    found = []
    for path in sorted(jobs_dir.glob("*/*.json")) if jobs_dir.is_dir() else []:
        job = _json_file(path)
        if isinstance(job, dict) and job.get("jid"):
            found.append(_job({**job, "details": json.dumps(job)}))
    return found


def _job(row: dict[str, Any]) -> Record:
    details = json.loads(row["details"])
    client_id = row.get("client_id", row.get("sid"))
    if "sid" in details and "client_id" not in details:
        details["client_id"] = details.pop("sid")
    return {"jid": str(row["jid"]), "client_id": str(client_id),
            "multi_job_id": row.get("multi_job_id"), "status": str(row["status"]),
            "started_at": iso_time(row.get("started_at")), "finished_at": iso_time(
                row.get("finished_at")), "created_by": str(row["created_by"]),
            "details": json.dumps(details)}


def _jobs(data_dir: Path) -> list[Record]:
    rows = _table(data_dir / "jobs.db", "jobs")
    return _file_jobs(data_dir / "jobs") if rows is None else [_job(r) for r in rows]


def _multi_job(row: dict[str, Any]) -> Record:
    return {"jid": str(row["jid"]), "started_at": iso_time(row["started_at"]),
            "created_by": str(row["created_by"]), "details": str(row["details"])}


def _group(row: dict[str, Any]) -> Record:
    return {"id": str(row["id"]), "description": str(row.get("description") or ""),
            "params": str(row.get("params") or "{}")}


def _skipped(data_dir: Path, notes: list[str]) -> None:
    """openrport's additions rportd has no table for: said, not silently dropped."""
    for file, table in (("clients.db", "stored_tunnels"), ("jobs.db", "schedules")):
        rows = _table(data_dir / file, table)
        if rows:
            notes.append(f"{file}: {len(rows)} rows of {table} (openrport) are not imported")


def read_data_dir(data_dir: Path) -> tuple[dict[str, list[Record]], list[str]]:
    """Clients (with their tunnels), jobs, multi-client jobs and client groups, and notes on
    anything left behind. Blocking (sqlite3): call it through asyncio.to_thread."""
    if not data_dir.is_dir():
        raise TransferRefused(f"{data_dir} is not a directory (rport's [server] data_dir)")
    notes: list[str] = []
    try:
        rows = {"clients": _clients(data_dir, notes),
                "multi_jobs": [_multi_job(r) for r in
                               _table(data_dir / "jobs.db", "multi_jobs") or []],
                "jobs": _jobs(data_dir),
                "client_groups": [_group(r) for r in
                                  _table(data_dir / "client_groups.db", "client_groups") or []]}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise TransferRefused(f"{data_dir} does not hold rport data as rport writes it "
                              f"({type(exc).__name__}: {exc}); nothing was changed") from None
    _skipped(data_dir, notes)
    return rows, notes


def _json_file(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TransferRefused(f"cannot read {path}: {exc}") from None


def read_clients_auth_file(path: Path) -> list[Record]:
    data = _json_file(path)
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise TransferRefused(f"{path} is not rport's client auth file (a JSON object of "
                              "id: password)")
    return [{"id": str(k), "password": v} for k, v in sorted(data.items())]


def _groups(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    return [str(g) for g in value] if isinstance(value, list) else []


def read_api_auth_file(path: Path) -> tuple[list[Record], list[Record]]:
    """Users and their groups from rport's `[api] auth_file`."""
    data = _json_file(path)
    if not isinstance(data, list) or not all(isinstance(e, dict) and "username" in e
                                             for e in data):
        raise TransferRefused(f"{path} is not rport's API users file (a JSON list of "
                              "{username, password, groups})")
    users = [{"username": str(e["username"]), "password": str(e.get("password", ""))}
             for e in data]
    groups = [{"username": str(e["username"]), "group": g} for e in data
              for g in sorted(set(_groups(e.get("groups"))))]
    return users, groups


async def read_auth_tables(store: Store, clients_table: str, users_table: str,
                           groups_table: str) -> dict[str, list[Record]]:
    """Credentials, users and groups from rport's own database tables (names validated)."""
    q = store.quote
    rows: dict[str, list[Record]] = {}
    if clients_table:
        found = await store.fetchall(f"SELECT {q('id')}, {q('password')} FROM {q(clients_table)}")
        rows["credentials"] = [{"id": str(i), "password": str(p)} for i, p in found]
    if users_table:
        found = await store.fetchall(
            f"SELECT {q('username')}, {q('password')} FROM {q(users_table)}")
        rows["users"] = [{"username": str(u), "password": str(p)} for u, p in found]
    if groups_table:
        found = await store.fetchall(
            f"SELECT DISTINCT {q('username')}, {q('group')} FROM {q(groups_table)}")
        rows["user_groups"] = [{"username": str(u), "group": str(g)} for u, g in found]
    return rows
