"""The jobs and multi_jobs tables (migration 0005): one query per function, every read scoped.

Reads take the caller's `Scope`; another tenant's job is not found, exactly like a missing one.
Both tables compare tenants byte for byte (BINARY collation in SQLite, utf8mb4_bin in MySQL).
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import NotFound
from ..store import Store
from ..tenancy import Scope, exact_equals
from .model import Job, job_summary, multi_summary

__all__ = ["JobStore", "job_not_found", "multi_job_not_found"]

_PRUNE_BATCH = 500


def job_not_found() -> NotFound:
    # No id in the text: the answer is the same for every missing or foreign job.
    return NotFound("job not found", code="ERR_CODE_JOB_NOT_FOUND")


def multi_job_not_found() -> NotFound:
    return NotFound("multi-client job not found", code="ERR_CODE_JOB_NOT_FOUND")


def _tenant(scope: Scope) -> str | None:
    """The tenant whose rows the scope reads; None: none at all. Without multi-tenancy every
    client (and so every job) is kept under tenant ''."""
    if scope.sees_nothing:
        return None
    return "" if scope.tenant is None else scope.tenant


class JobStore:
    def __init__(self, store: Store):
        self._store = store

    def _where(self, *columns: str) -> str:
        """`column = ?` (for the index) and the byte-exact test, for each column: MariaDB's
        utf8mb4_bin still pads, so 'J ' would find 'J' and 'c1 ' would find 'c1'."""
        return " AND ".join(f"{c} = ? AND {exact_equals(self._store, c)}" for c in columns)

    # ------------------------------------------------------------------ writes (rportd's own)
    async def insert_job(self, tenant: str, job: Job) -> None:
        await self._store.execute(
            "INSERT INTO jobs (tenant, jid, client_id, multi_job_id, status, started_at, "
            "finished_at, created_by, details) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (tenant, job["jid"], job["client_id"], job["multi_job_id"], job["status"],
             job["started_at"], job["finished_at"], job["created_by"], json.dumps(job)))

    async def update_job(self, tenant: str, job: Job) -> None:
        await self._store.execute(
            "UPDATE jobs SET status = ?, finished_at = ?, details = ? WHERE "
            + self._where("tenant", "jid"),
            (job["status"], job["finished_at"], json.dumps(job), *_twice(tenant, job["jid"])))

    async def delete_job(self, tenant: str, jid: str) -> None:
        await self._store.execute("DELETE FROM jobs WHERE " + self._where("tenant", "jid"),
                                  _twice(tenant, jid))

    async def insert_multi_job(self, tenant: str, multi: Job) -> None:
        await self._store.execute(
            "INSERT INTO multi_jobs (tenant, jid, started_at, created_by, details) "
            "VALUES (?, ?, ?, ?, ?)",
            (tenant, multi["jid"], multi["started_at"], multi["created_by"], json.dumps(multi)))

    async def running_jobs(self) -> list[tuple[str, Job]]:
        """Every job still marked running, with its tenant (start-up: none of them can report)."""
        rows = await self._store.fetchall(
            "SELECT tenant, details FROM jobs WHERE status = ?", ("running",))
        return [(str(tenant), json.loads(details)) for tenant, details in rows]

    async def prune_client(self, tenant: str, client_id: str, keep: int) -> int:
        """Delete a client's finished jobs beyond the `keep` newest; how many went."""
        rows = await self._store.fetchall(
            "SELECT jid FROM jobs WHERE " + self._where("tenant", "client_id")
            + " ORDER BY started_at DESC, jid DESC LIMIT ? OFFSET ?",
            (*_twice(tenant, client_id), _PRUNE_BATCH, keep))
        return await self._delete_finished(tenant, [str(row[0]) for row in rows])

    async def _delete_finished(self, tenant: str, jids: list[str]) -> int:
        if not jids:
            return 0
        marks = ", ".join("?" for _ in jids)
        return await self._store.execute(
            f"DELETE FROM jobs WHERE {self._where('tenant')} AND status <> ? AND jid IN ({marks})",
            (*_twice(tenant), "running", *jids))

    async def prune_multi_jobs(self, tenant: str, keep: int) -> int:
        rows = await self._store.fetchall(
            f"SELECT jid FROM multi_jobs WHERE {self._where('tenant')} ORDER BY started_at DESC, "
            "jid DESC LIMIT ? OFFSET ?", (*_twice(tenant), _PRUNE_BATCH, keep))
        jids = [str(row[0]) for row in rows]
        if not jids:
            return 0
        marks = ", ".join("?" for _ in jids)
        return await self._store.execute(
            f"DELETE FROM multi_jobs WHERE {self._where('tenant')} AND jid IN ({marks})",
            (*_twice(tenant), *jids))

    # ------------------------------------------------------------------ scoped reads
    async def job(self, scope: Scope, client_id: str, jid: str) -> Job:
        tenant = _tenant(scope)
        row = None if tenant is None else await self._store.fetchone(
            "SELECT details FROM jobs WHERE " + self._where("tenant", "client_id", "jid"),
            _twice(tenant, client_id, jid))
        if row is None:
            raise job_not_found()
        return _loads(row[0])

    async def client_jobs(self, scope: Scope, client_id: str) -> list[Job]:
        """Summaries, running first, then by finish time, newest first (as rport sorts)."""
        tenant = _tenant(scope)
        if tenant is None:
            return []
        rows = await self._store.fetchall(
            "SELECT details FROM jobs WHERE " + self._where("tenant", "client_id"),
            _twice(tenant, client_id))
        summaries = [job_summary(_loads(row[0])) for row in rows]
        summaries.sort(key=lambda j: j["finished_at"] or "~", reverse=True)
        return summaries

    async def multi_job(self, scope: Scope, jid: str) -> Job:
        """The multi-client job with its jobs (oldest first)."""
        tenant = _tenant(scope)
        row = None if tenant is None else await self._store.fetchone(
            "SELECT details FROM multi_jobs WHERE " + self._where("tenant", "jid"),
            _twice(tenant, jid))
        if row is None:
            raise multi_job_not_found()
        assert tenant is not None
        jobs = await self._store.fetchall(
            "SELECT details FROM jobs WHERE " + self._where("tenant", "multi_job_id")
            + " ORDER BY started_at, jid", _twice(tenant, jid))
        return {**_loads(row[0]), "jobs": [_loads(job[0]) for job in jobs]}

    async def multi_jobs(self, scope: Scope) -> list[Job]:
        tenant = _tenant(scope)
        if tenant is None:
            return []
        rows = await self._store.fetchall(
            f"SELECT details FROM multi_jobs WHERE {self._where('tenant')} "
            "ORDER BY started_at DESC, jid DESC", _twice(tenant))
        return [multi_summary(_loads(row[0])) for row in rows]


def _twice(*values: str) -> tuple[str, ...]:
    """Each value bound twice, as `_where` compares each column twice."""
    return tuple(v for value in values for v in (value, value))


def _loads(details: Any) -> Job:
    if isinstance(details, bytes):
        details = details.decode("utf-8")
    job = json.loads(details)
    assert isinstance(job, dict)
    return job
