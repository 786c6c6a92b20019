"""The audit log: who did what to which target in which tenant, with what result, from where.

Entries are queued in memory (bounded) and written in batches by one owned task, so a slow or
dead database neither delays nor loses the answer to the write being recorded: while the
database is down the queue holds up to `MAX_QUEUED` entries and retries; beyond that entries are
dropped and counted in the log. Entries never carry a password or a token: the API layer picks
the fields it records (api/auditlog.py), and this module stores exactly what it is given.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .errors import StoreError
from .store import Store
from .tenancy import Scope

__all__ = ["AuditEntry", "AuditLog", "AuditQuery", "MAX_QUEUED", "FILTERS"]

log = logging.getLogger("rportd.audit")
MAX_QUEUED = 10_000
BATCH = 200
RETRY_AFTER = 1.0
FILTERS = ("username", "action", "target", "result", "since", "until")
_COLUMNS = ("tenant", "username", "action", "target", "result", "source", "at", "details")
_LIMITS = {"tenant": 50, "username": 150, "action": 100, "target": 255, "result": 40,
           "source": 64, "at": 40}


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class AuditEntry:
    tenant: str
    username: str
    action: str
    target: str
    result: str
    source: str
    at: str = field(default_factory=now_iso)
    details: dict[str, Any] = field(default_factory=dict)

    def row(self) -> tuple[str, ...]:
        values = [getattr(self, c) for c in _COLUMNS[:-1]]
        clipped = [str(v)[:_LIMITS[c]] for c, v in zip(_COLUMNS[:-1], values, strict=True)]
        return (*clipped, json.dumps(self.details, separators=(",", ":"))[:4000])


@dataclass(frozen=True)
class AuditQuery:
    filters: dict[str, str]
    limit: int = 100
    offset: int = 0
    newest_first: bool = True


def _entry_json(row: tuple[Any, ...]) -> dict[str, Any]:
    try:
        details = json.loads(str(row[8]))
    except ValueError:
        details = {}
    return {"id": int(row[0]), "tenant": str(row[1]), "username": str(row[2]),
            "action": str(row[3]), "target": str(row[4]), "result": str(row[5]),
            "source": str(row[6]), "at": str(row[7]), "details": details}


class AuditLog:
    """Queue, writer task and queries of the `audit_log` table."""

    def __init__(self, store: Store, max_queued: int = MAX_QUEUED) -> None:
        self._store = store
        self._queue: deque[AuditEntry] = deque()
        self._max = max_queued
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self.dropped = 0

    def record(self, entry: AuditEntry) -> None:
        """Never waits: queued for the writer, or dropped (and counted) when the queue is full."""
        if len(self._queue) >= self._max:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.error("audit log queue full (database down?): %d entries dropped",
                          self.dropped)
            return
        self._queue.append(entry)
        self._idle.clear()
        self._wake.set()

    async def run(self) -> None:
        """The writer: batches in one transaction each; on a database error keeps the batch
        and retries after RETRY_AFTER seconds. Cancel it to stop (after `flush`)."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                if not await self._write_batch():
                    await asyncio.sleep(RETRY_AFTER)
            self._idle.set()

    async def _write_batch(self) -> bool:
        batch = [self._queue[i] for i in range(min(BATCH, len(self._queue)))]
        sql = (f"INSERT INTO audit_log ({', '.join(self._store.quote(c) for c in _COLUMNS)}) "
               f"VALUES ({', '.join('?' for _ in _COLUMNS)})")
        try:
            async with self._store.transaction() as tx:
                for entry in batch:
                    await tx.execute(sql, entry.row())
        except StoreError as exc:
            log.warning("writing %d audit entries failed: %s; retrying", len(batch), exc)
            return False
        except Exception:  # not the database: retrying the same batch would fail forever
            log.exception("audit entries dropped: %d", len(batch))
            self.dropped += len(batch)
        for _ in batch:
            self._queue.popleft()
        return True

    async def flush(self, timeout: float) -> bool:
        """Wait (bounded) until everything queued is written; False when time ran out."""
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        except TimeoutError:
            log.error("audit log: %d entries not written at shutdown", len(self._queue))
            return False
        return True

    async def entries(self, scope: Scope, query: AuditQuery) -> tuple[list[dict[str, Any]], int]:
        """One page of the scope's entries and the total matching: a scope without a tenant
        sees nothing, an unscoped one (no tenancy, or the operator) sees every tenant's."""
        if scope.sees_nothing:
            return [], 0
        where, params = self._where(scope, query.filters)
        q = self._store.quote
        count = await self._store.fetchone(f"SELECT COUNT(*) FROM audit_log{where}", params)
        order = "DESC" if query.newest_first else "ASC"
        rows = await self._store.fetchall(
            f"SELECT id, {', '.join(q(c) for c in _COLUMNS)} FROM audit_log{where} "
            f"ORDER BY {q('at')} {order}, id {order} LIMIT ? OFFSET ?",
            (*params, query.limit, query.offset))
        return [_entry_json(r) for r in rows], int(count[0]) if count else 0

    def _where(self, scope: Scope, filters: dict[str, str]) -> tuple[str, list[Any]]:
        """The table is binary-collated (migration 0006): `=` compares exactly."""
        clauses, params = [], []
        if scope.tenant is not None:
            clauses.append(f"{self._store.quote('tenant')} = ?")
            params.append(scope.tenant)
        for name, value in filters.items():
            op = {"since": ">=", "until": "<="}.get(name, "=")
            column = "at" if name in ("since", "until") else name
            clauses.append(f"{self._store.quote(column)} {op} ?")
            params.append(value)
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), params
