"""MySQL/MariaDB backend: aiomysql connections in a small pool, a deadline on every call."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import aiomysql
import pymysql
from pymysql.constants import CLIENT

from ..config import DatabaseConfig
from ..errors import DatabaseUnavailable, StoreError
from .base import OutageGate, Row, Store, Transaction

__all__ = ["MySQLStore", "split_statements"]


@functools.lru_cache(maxsize=512)
def _paramstyle(sql: str) -> str:
    """Our SQL uses `?`; pymysql wants `%s` and a literal % doubled."""
    return sql.replace("%", "%%").replace("?", "%s")


def split_statements(script: str) -> list[str]:
    """Split a migration file into statements (ends of lines with `;`; no procedures in ours)."""
    statements, current = [], []
    for line in script.splitlines():
        if line.strip().startswith("--"):
            continue
        current.append(line)
        if line.rstrip().endswith(";"):
            statements.append("\n".join(current).strip().rstrip(";"))
            current = []
    tail = "\n".join(current).strip()
    if tail:
        statements.append(tail)
    return [s for s in statements if s]


class _MySQLTransaction(Transaction):
    def __init__(self, cursor: aiomysql.Cursor):
        self._cursor = cursor

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        await self._cursor.execute(_paramstyle(sql), tuple(params))
        return int(self._cursor.rowcount)

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        await self._cursor.execute(_paramstyle(sql), tuple(params))
        return [tuple(row) for row in await self._cursor.fetchall()]


def _connect_args(db: DatabaseConfig) -> dict[str, Any]:
    # FOUND_ROWS: an UPDATE reports matched rows, as SQLite does, not only changed ones.
    args: dict[str, Any] = {"user": db.db_user or "root", "password": db.db_password,
                            "db": db.db_name, "autocommit": True, "charset": "utf8mb4",
                            "client_flag": CLIENT.FOUND_ROWS,
                            "connect_timeout": db.db_timeout}
    if db.db_host.startswith("socket:"):
        args["unix_socket"] = db.db_host.removeprefix("socket:")
    else:
        host, _, port = (db.db_host or "127.0.0.1:3306").rpartition(":")
        args.update(host=host, port=int(port))
    return args


# Errors meaning "the server is not there or the connection broke" (as opposed to a bad
# statement): CR_CONNECTION_ERROR, CR_CONN_HOST_ERROR, CR_SERVER_GONE_ERROR, CR_SERVER_LOST,
# ER_CON_COUNT_ERROR, ER_SERVER_SHUTDOWN, ... plus pymysql's own InterfaceError.
_UNAVAILABLE = {1040, 1053, 1205, 2002, 2003, 2006, 2013, 2014, 2055}


def _translate(exc: BaseException, where: str) -> StoreError:
    """A driver error as rportd's: DatabaseUnavailable for outages (the API's 503)."""
    if isinstance(exc, TimeoutError):
        return DatabaseUnavailable(f"MySQL at {where} did not answer within the db_timeout")
    if isinstance(exc, OSError | pymysql.err.InterfaceError):
        return DatabaseUnavailable(f"MySQL at {where} is unreachable: {exc}")
    code = exc.args[0] if isinstance(exc, pymysql.err.Error) and exc.args else None
    if isinstance(exc, pymysql.err.OperationalError) and code in _UNAVAILABLE:
        return DatabaseUnavailable(f"MySQL at {where} is unavailable: {exc}")
    return StoreError(str(exc))


_DRIVER_ERRORS = (pymysql.err.Error, OSError, TimeoutError)


class _Pool:
    """At most `size` connections, each call under one deadline. A connection that timed out or
    failed is closed, never reused: after a stall it may still owe the answer to an old query.
    Any outage also drops the idle ones, so the first calls after recovery use fresh
    connections instead of failing one by one on dead sockets."""

    def __init__(self, args: dict[str, Any], size: int = 10, recycle: float = 3600.0):
        self._args = args
        self._idle: list[tuple[float, aiomysql.Connection]] = []
        self._slots = asyncio.Semaphore(size)
        self._recycle = recycle

    async def acquire(self) -> aiomysql.Connection:
        loop = asyncio.get_running_loop()
        while self._idle:
            born, conn = self._idle.pop()
            if not conn.closed and loop.time() - born < self._recycle:
                return conn
            conn.close()
        return await aiomysql.connect(**self._args)

    def release(self, conn: aiomysql.Connection, healthy: bool) -> None:
        if healthy and not conn.closed:
            self._idle.append((asyncio.get_running_loop().time(), conn))
            return
        conn.close()
        if not healthy:
            self.drop_idle()

    def drop_idle(self) -> None:
        for _, conn in self._idle:
            conn.close()
        self._idle.clear()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[aiomysql.Connection]:
        async with self._slots:
            conn = await self.acquire()
            healthy = False
            try:
                yield conn
                healthy = True
            finally:
                self.release(conn, healthy and not conn.get_transaction_status())


class MySQLStore(Store):
    dialect = "mysql"

    def __init__(self, pool: _Pool, db: DatabaseConfig):
        self._pool = pool
        self._name = db.db_name
        self._timeout = db.db_timeout
        self._where = db.db_host or "127.0.0.1:3306"
        self._gate = OutageGate(min(1.0, db.db_timeout / 2))

    @classmethod
    async def open(cls, db: DatabaseConfig) -> MySQLStore:
        store = cls(_Pool(_connect_args(db)), db)
        try:
            async with asyncio.timeout(db.db_timeout), store._pool.connection():
                pass
        except _DRIVER_ERRORS as exc:
            where = db.db_host or "127.0.0.1:3306"
            raise StoreError(f"cannot connect to MySQL at {where} (database {db.db_name!r}): "
                             f"{exc or 'no answer within db_timeout'}") from exc
        return store

    def quote(self, identifier: str) -> str:
        return "`" + identifier.replace("`", "``") + "`"

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        async with self.transaction() as tx:
            return await tx.fetchall(sql, params)

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        async with self.transaction() as tx:
            return await tx.execute(sql, params)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        async with self._gate.call(), self._deadline() as conn:
            await conn.begin()
            try:
                async with conn.cursor() as cursor:
                    yield _MySQLTransaction(cursor)
                await conn.commit()
            except BaseException:
                if not conn.closed:
                    conn.close()  # never roll back on a connection that may be stalled
                raise

    @asynccontextmanager
    async def _deadline(self) -> AsyncIterator[aiomysql.Connection]:
        """A pooled connection, the whole use of it within db_timeout; errors translated."""
        try:
            async with asyncio.timeout(self._timeout), self._pool.connection() as conn:
                yield conn
        except _DRIVER_ERRORS as exc:
            raise _translate(exc, self._where) from exc

    async def executescript(self, script: str) -> None:
        """Run a migration file. MySQL commits DDL implicitly, so statements run one by one;
        migrations may take long, so each statement gets the deadline, not the whole file."""
        try:
            async with self._pool.connection() as conn, conn.cursor() as cursor:
                for statement in split_statements(script):
                    async with asyncio.timeout(max(self._timeout, 60.0)):
                        await cursor.execute(statement)
        except _DRIVER_ERRORS as exc:
            raise _translate(exc, self._where) from exc

    async def table_columns(self, table: str) -> list[str] | None:
        rows = await self.fetchall(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
            (self._name, table))
        return [str(row[0]) for row in rows] or None

    async def close(self) -> None:
        self._pool.drop_idle()
