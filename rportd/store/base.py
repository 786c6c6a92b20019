"""The Store interface both backends implement, and the factory that picks one from the config."""

from __future__ import annotations

import abc
import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from ..config import DatabaseConfig
from ..errors import DatabaseUnavailable, StoreError

__all__ = ["Store", "Row", "open_store", "OutageGate"]

Row = tuple[Any, ...]


class Store(abc.ABC):
    """Async access to one database. SQL is written with `?` placeholders; values are always bound.

    Identifiers (table and column names) go through `quote`, and table names reach here only after
    `config.validate_identifier` accepted them.
    """

    dialect: str

    @abc.abstractmethod
    def quote(self, identifier: str) -> str:
        """Quote a validated identifier for this dialect."""

    @abc.abstractmethod
    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Run a query and return all rows."""

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    @abc.abstractmethod
    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement in its own transaction; return the affected row count."""

    @abc.abstractmethod
    def transaction(self) -> Any:
        """An async context manager yielding a `Transaction`: all or nothing."""

    @abc.abstractmethod
    async def executescript(self, script: str) -> None:
        """Run a file of `;`-terminated statements (migrations), atomically where the DB can."""

    @abc.abstractmethod
    async def table_columns(self, table: str) -> list[str] | None:
        """The column names of `table`, or None when it does not exist."""

    def data_version(self) -> int | None:
        """A number that changes whenever any connection commits, read without I/O; None when
        the backend cannot tell (then callers must re-read)."""
        return None

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections."""


class OutageGate:
    """Fails calls fast while the database is known to be down, so a stall does not make every
    caller wait out its own deadline: after a failure, calls within `cool_down` seconds fail at
    once; then one call at a time tries the database again (the others fail at once) until one
    succeeds."""

    def __init__(self, cool_down: float):
        self._cool_down = cool_down
        self._retry_at: float | None = None  # None: the database is up
        self._probing = False

    @asynccontextmanager
    async def call(self) -> AsyncIterator[None]:
        now = asyncio.get_running_loop().time()
        if self._retry_at is not None and (now < self._retry_at or self._probing):
            raise DatabaseUnavailable("the database is down; not trying again yet")
        probing = self._retry_at is not None
        self._probing = self._probing or probing
        try:
            yield
        except DatabaseUnavailable:
            self._retry_at = asyncio.get_running_loop().time() + self._cool_down
            raise
        else:
            self._retry_at = None
        finally:
            if probing:
                self._probing = False


class Transaction(abc.ABC):
    @abc.abstractmethod
    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int: ...

    @abc.abstractmethod
    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]: ...


async def open_store(db: DatabaseConfig) -> Store:
    """Connect to the configured database; StoreError says what to fix when it cannot."""
    if db.db_type == "sqlite":
        from .sqlite import SQLiteStore

        return await SQLiteStore.open(db.db_name, db.db_timeout)
    if db.db_type == "mysql":
        from .mysql import MySQLStore

        return await MySQLStore.open(db)
    raise StoreError(f"unknown db_type {db.db_type!r}")

