"""MySQL/MariaDB backend (aiomysql with a pool); `db_host` is host:port or socket:/path."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import aiomysql
import pymysql
from pymysql.constants import CLIENT

from ..config import DatabaseConfig
from ..errors import StoreError
from .base import Row, Store, Transaction

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
                            "client_flag": CLIENT.FOUND_ROWS}
    if db.db_host.startswith("socket:"):
        args["unix_socket"] = db.db_host.removeprefix("socket:")
    else:
        host, _, port = (db.db_host or "127.0.0.1:3306").rpartition(":")
        args.update(host=host, port=int(port))
    return args


class MySQLStore(Store):
    dialect = "mysql"

    def __init__(self, pool: aiomysql.Pool, name: str):
        self._pool = pool
        self._name = name

    @classmethod
    async def open(cls, db: DatabaseConfig) -> MySQLStore:
        args = _connect_args(db)
        try:
            pool = await aiomysql.create_pool(minsize=1, maxsize=10, pool_recycle=3600, **args)
        except (pymysql.err.Error, OSError) as exc:
            where = db.db_host or "127.0.0.1:3306"
            raise StoreError(f"cannot connect to MySQL at {where} (database {db.db_name!r}): "
                             f"{exc}") from exc
        return cls(pool, db.db_name)

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
        try:
            async with self._pool.acquire() as conn:
                await conn.begin()
                try:
                    async with conn.cursor() as cursor:
                        yield _MySQLTransaction(cursor)
                    await conn.commit()
                except BaseException:
                    await conn.rollback()
                    raise
        except pymysql.err.Error as exc:
            raise StoreError(str(exc)) from exc

    async def executescript(self, script: str) -> None:
        """Run a migration file. MySQL commits DDL implicitly, so statements run one by one."""
        try:
            async with self._pool.acquire() as conn, conn.cursor() as cursor:
                for statement in split_statements(script):
                    await cursor.execute(statement)
        except pymysql.err.Error as exc:
            raise StoreError(str(exc)) from exc

    async def table_columns(self, table: str) -> list[str] | None:
        rows = await self.fetchall(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
            (self._name, table))
        return [str(row[0]) for row in rows] or None

    async def close(self) -> None:
        self._pool.close()
        await self._pool.wait_closed()
