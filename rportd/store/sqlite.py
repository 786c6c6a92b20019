"""SQLite backend (aiosqlite, WAL), a deadline on every call: the embedded default and an operator's file."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from ..errors import DatabaseUnavailable, StoreError
from .base import Row, Store, Transaction

__all__ = ["SQLiteStore"]

# aiosqlite logs every statement with its parameters at debug (password hashes, API token
# digests, command output): its logger never goes below info, whatever the operator's level.
logging.getLogger("aiosqlite").setLevel(logging.INFO)


class _SQLiteTransaction(Transaction):
    def __init__(self, db: aiosqlite.Connection):
        self._db = db

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        cursor = await self._db.execute(sql, params)
        return cursor.rowcount

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        async with self._db.execute(sql, params) as cursor:
            return [tuple(row) for row in await cursor.fetchall()]


def _translate(exc: BaseException) -> StoreError:
    """A locked file or a call over the deadline is an outage (503); anything else a fault."""
    if isinstance(exc, TimeoutError):
        return DatabaseUnavailable("SQLite did not answer within the db_timeout")
    if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
        return DatabaseUnavailable(f"SQLite: {exc}")
    return StoreError(str(exc))


class SQLiteStore(Store):
    dialect = "sqlite"

    def __init__(self, db: aiosqlite.Connection, probe: sqlite3.Connection, timeout: float = 5.0):
        self._db = db
        self._probe = probe
        self._timeout = timeout
        # One connection serialises writers; the lock keeps a transaction's statements together.
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: str, timeout: float = 5.0) -> SQLiteStore:
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            db = await aiosqlite.connect(path, isolation_level=None)
            await db.execute("PRAGMA journal_mode=WAL")
            # a locked file waits most of the deadline, then fails cleanly as "database is
            # locked" (before the deadline abandons a call still running in aiosqlite's thread)
            await db.execute(f"PRAGMA busy_timeout={int(timeout * 800)}")
            await db.execute("PRAGMA foreign_keys=ON")
            # A read-only side connection for data_version: it reads the WAL index (shared
            # memory), a few microseconds, so the event loop may call it per request.
            probe = sqlite3.connect(f"file:{Path(path).resolve()}?mode=ro", uri=True,
                                    check_same_thread=False)
        except (OSError, aiosqlite.Error, sqlite3.Error) as exc:
            raise StoreError(f"cannot open SQLite database {path!r}: {exc}") from exc
        return cls(db, probe, timeout)

    def data_version(self) -> int | None:
        try:
            return int(self._probe.execute("PRAGMA data_version").fetchone()[0])
        except sqlite3.Error:
            return None

    def quote(self, identifier: str) -> str:
        return '"' + identifier.replace('"', '""') + '"'

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        try:
            async with asyncio.timeout(self._timeout), self._db.execute(sql, params) as cursor:
                return [tuple(row) for row in await cursor.fetchall()]
        except (aiosqlite.Error, TimeoutError) as exc:
            raise _translate(exc) from exc

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        async with self.transaction() as tx:
            return await tx.execute(sql, params)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        try:
            async with asyncio.timeout(self._timeout), self._lock:
                try:
                    await self._db.execute("BEGIN IMMEDIATE")
                    yield _SQLiteTransaction(self._db)
                    await self._db.execute("COMMIT")
                except BaseException:
                    if self._db.in_transaction:
                        await self._db.execute("ROLLBACK")
                    raise
        except (aiosqlite.Error, TimeoutError) as exc:
            raise _translate(exc) from exc

    async def executescript(self, script: str) -> None:
        """Run a migration file inside one transaction (SQLite DDL is transactional)."""
        async with self._lock:
            try:
                await self._db.executescript("BEGIN;\n" + script + "\nCOMMIT;")
            except aiosqlite.Error as exc:
                if self._db.in_transaction:
                    await self._db.execute("ROLLBACK")
                raise StoreError(str(exc)) from exc

    async def table_columns(self, table: str) -> list[str] | None:
        rows = await self.fetchall(f"PRAGMA table_info({self.quote(table)})")
        return [str(row[1]) for row in rows] or None

    async def close(self) -> None:
        self._probe.close()
        await self._db.close()
