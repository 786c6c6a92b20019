"""Where each tenant-owned kind lives on a server: a database table, an auth file, or one pair.

Every place reads one tenant's rows, finds rows with a given key, inserts and deletes, inside the
caller's transaction. Files (`auth_file`) cannot join a database transaction: their new contents
are written atomically (a rename) by `finish()`, after the commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..config import Config
from ..errors import TransferRefused
from ..store import Store
from ..store.base import Transaction
from ..tenancy import exact_equals, normalize_tenant
from .tables import TABLES, TenantTable

__all__ = ["Record", "Place", "TablePlace", "resolve_places", "write_private_file"]

Record = dict[str, Any]


class Place:
    """Base: a kind that this server keeps nowhere; reads are empty and writes refused."""

    def __init__(self, spec: TenantTable, label: str):
        self.spec = spec
        self.label = label
        self.columns: set[str] = set()

    async def prepare(self) -> None:
        """Learn the columns (and load files) before the transaction starts."""

    async def read_tenant(self, tx: Transaction, tenant: str) -> list[Record]:
        return []

    async def preload(self, tx: Transaction, tenant: str) -> None:
        """Before many `find`s for one tenant: read what can be matched in memory."""

    async def find(self, tx: Transaction, tenant: str, row: Record) -> list[tuple[str, Record]]:
        """Rows with the row's key as the database matches it (its collation decides), each
        with its tenant: in every tenant for global keys, else in `tenant` only."""
        return []

    async def insert(self, tx: Transaction, tenant: str, row: Record) -> None:
        raise TransferRefused(f"{self.spec.kind}: {self.label}; nothing was changed")

    async def delete_tenant(self, tx: Transaction, tenant: str) -> int:
        return 0

    def finish(self) -> None:
        """After the commit: write what cannot be part of the transaction."""


def _text(value: Any) -> Any:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


class TablePlace(Place):
    """A table. `scoped`: rows carry the tenant column and are filtered by it (rportd's own
    tables always; an operator's table only under multi_tenancy)."""

    def __init__(self, spec: TenantTable, store: Store, table: str, scoped: bool):
        super().__init__(spec, f'table "{table}"')
        self._store, self._table, self._scoped = store, table, scoped
        self._has_tenant = False
        self._known: dict[tuple[Any, ...], list[Record]] | None = None

    async def prepare(self) -> None:
        found = await self._store.table_columns(self._table)
        if found is None:
            raise TransferRefused(f"{self.spec.kind}: {self.label} does not exist; create it "
                                  "(rportd migrate -c FILE) or fix the setting")
        self._has_tenant = self.spec.tenant_column in found
        if self._scoped and not self._has_tenant:
            raise TransferRefused(f"{self.spec.kind}: {self.label} has no "
                                  f"{self.spec.tenant_column} column, which multi_tenancy needs")
        self.columns = {c for c in found
                        if c != self.spec.tenant_column and c not in self.spec.generated}

    def _q(self, name: str) -> str:
        return self._store.quote(name)

    def _select(self) -> str:
        names = sorted(self.columns)
        tenant = self._q(self.spec.tenant_column) if self._has_tenant else "''"
        cols = ", ".join(self._q(c) for c in names)
        return f"SELECT {tenant}, {cols} FROM {self._q(self._table)}"

    def _records(self, rows: Sequence[Sequence[Any]]) -> list[tuple[str, Record]]:
        names = sorted(self.columns)
        return [(normalize_tenant(row[0]), {n: _text(v) for n, v in zip(names, row[1:],
                                                                          strict=True)})
                for row in rows]

    async def read_tenant(self, tx: Transaction, tenant: str) -> list[Record]:
        if not self._scoped:
            return [rec for _, rec in self._records(await tx.fetchall(self._select()))]
        sql = f"{self._select()} WHERE {self._tenant_value()} = ?"
        found = self._records(await tx.fetchall(sql, (tenant,)))
        return [rec for owner, rec in found if owner == tenant]  # exact, whatever the collation

    def _tenant_value(self) -> str:
        """rportd writes its own tables' tenant values normalised; an operator's tool may write
        ' J ', which rportd reads as tenant J (`normalize_tenant`), as tenant_admin deletes it."""
        column = self._q(self.spec.tenant_column)
        return f"TRIM({column})" if self.spec.operators else column

    def _key(self, row: Record) -> tuple[Any, ...]:
        return tuple(row.get(k) for k in self.spec.keys)

    async def preload(self, tx: Transaction, tenant: str) -> None:
        """rportd's own tables compare keys byte for byte (utf8mb4_bin, SQLite's BINARY) and a
        tenant's keys are its own: one read replaces a query per row. Operators' tables (any
        collation) and global keys are asked row by row."""
        if self.spec.operators or self.spec.global_keys or not self._scoped:
            return
        self._known = {}
        for record in await self.read_tenant(tx, tenant):
            self._known.setdefault(self._key(record), []).append(record)

    async def find(self, tx: Transaction, tenant: str, row: Record) -> list[tuple[str, Record]]:
        if self._known is not None:
            return [(tenant, r) for r in self._known.get(self._key(row), [])]
        where = [f"{self._q(k)} = ?" for k in self.spec.keys]
        params: list[Any] = [row.get(k) for k in self.spec.keys]
        if self._scoped and not self.spec.global_keys:
            where.append(f"{self._tenant_value()} = ?")
            params.append(tenant)
        sql = self._select() + (" WHERE " + " AND ".join(where) if where else "")
        found = self._records(await tx.fetchall(sql, params))
        if self._scoped and not self.spec.global_keys:
            found = [(owner, rec) for owner, rec in found if owner == tenant]
        return found

    async def insert(self, tx: Transaction, tenant: str, row: Record) -> None:
        names = sorted(c for c in row if c in self.columns)
        values = [row[c] for c in names]
        if self._has_tenant:
            names.append(self.spec.tenant_column)
            values.append(tenant)
        cols = ", ".join(self._q(c) for c in names)
        marks = ", ".join("?" for _ in names)
        await tx.execute(f"INSERT INTO {self._q(self._table)} ({cols}) VALUES ({marks})", values)
        if self._known is not None:
            self._known.setdefault(self._key(row), []).append(dict(row))

    async def delete_tenant(self, tx: Transaction, tenant: str) -> int:
        table = self._q(self._table)
        if not self._scoped:
            return await tx.execute(f"DELETE FROM {table}")
        value = self._tenant_value()
        return await tx.execute(f"DELETE FROM {table} WHERE {value} = ? AND "
                                f"{exact_equals(self._store, value)}", (tenant, tenant))


def write_private_file(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically (a rename), mode 0600, synced before the rename. The
    temporary file is a new one of a fresh name (O_EXCL): a symlink planted beside `path` in a
    shared directory never receives the data."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class _JsonFile:
    """An auth file's parsed contents, shared by the places that view it; written once."""

    def __init__(self, path: str, empty: Any):
        self.path = Path(path)
        self.data: Any = empty
        self.dirty = False

    def load(self) -> None:
        if self.path.exists():
            self.data = json.loads(self.path.read_text(encoding="utf-8"))

    def save(self) -> None:
        if self.dirty:
            write_private_file(self.path, json.dumps(self.data, indent=2).encode() + b"\n")
            self.dirty = False


class CredentialFilePlace(Place):
    """`[server] auth_file`: {"id": "password", ...}; no tenants (single-tenant servers)."""

    def __init__(self, spec: TenantTable, path: str):
        super().__init__(spec, f"file {path}")
        self._file = _JsonFile(path, {})
        self.columns = {"id", "password"}

    async def prepare(self) -> None:
        await asyncio.to_thread(self._file.load)
        if not isinstance(self._file.data, dict):
            raise TransferRefused(f"{self.label} is not a JSON object of id: password")

    async def read_tenant(self, tx: Transaction, tenant: str) -> list[Record]:
        return [{"id": k, "password": v} for k, v in sorted(self._file.data.items())]

    async def find(self, tx: Transaction, tenant: str, row: Record) -> list[tuple[str, Record]]:
        key = row.get("id")
        stored = self._file.data.get(key)
        return [] if stored is None else [("", {"id": key, "password": stored})]

    async def insert(self, tx: Transaction, tenant: str, row: Record) -> None:
        self._file.data[str(row["id"])] = str(row["password"])
        self._file.dirty = True

    async def delete_tenant(self, tx: Transaction, tenant: str) -> int:
        count = len(self._file.data)
        self._file.data, self._file.dirty = {}, bool(count)
        return count

    def finish(self) -> None:
        self._file.save()


class UserFilePlace(Place):
    """`[api] auth_file`: [{"username", "password", "groups"}]; viewed as users or as groups."""

    def __init__(self, spec: TenantTable, shared: _JsonFile):
        super().__init__(spec, f"file {shared.path}")
        self._file = shared
        self._groups = spec.kind == "user_groups"
        self.columns = {"username", "group"} if self._groups else {"username", "password"}

    async def prepare(self) -> None:
        if not self._file.path.exists() or self._file.dirty:
            return
        await asyncio.to_thread(self._file.load)
        if not isinstance(self._file.data, list):
            raise TransferRefused(f"{self.label} is not a JSON list of users")

    def _entries(self) -> list[dict[str, Any]]:
        return [e for e in self._file.data if isinstance(e, dict)]

    def _rows(self) -> list[Record]:
        if not self._groups:
            return [{"username": e.get("username"), "password": e.get("password")}
                    for e in self._entries()]
        groups = [(e.get("username"), e.get("groups") or []) for e in self._entries()]
        return [{"username": name, "group": g} for name, gs in groups
                for g in ([gs] if isinstance(gs, str) else gs)]

    async def read_tenant(self, tx: Transaction, tenant: str) -> list[Record]:
        return self._rows()

    async def find(self, tx: Transaction, tenant: str, row: Record) -> list[tuple[str, Record]]:
        keys = self.spec.keys
        return [("", r) for r in self._rows() if all(r.get(k) == row.get(k) for k in keys)]

    def _entry(self, username: str) -> dict[str, Any]:
        for entry in self._entries():
            if entry.get("username") == username:
                return entry
        entry = {"username": username, "password": "", "groups": []}
        self._file.data.append(entry)
        return entry

    async def insert(self, tx: Transaction, tenant: str, row: Record) -> None:
        entry = self._entry(str(row["username"]))
        if self._groups:
            groups = entry.get("groups") or []
            entry["groups"] = [*([groups] if isinstance(groups, str) else groups), row["group"]]
        else:
            entry["password"] = row["password"]
        self._file.dirty = True

    async def delete_tenant(self, tx: Transaction, tenant: str) -> int:
        count = len(self._rows())
        if count and not self._groups:
            self._file.data, self._file.dirty = [], True
        return count

    def finish(self) -> None:
        self._file.save()


class SinglePlace(Place):
    """`auth = "id:password"`: one pair in the config; read-only."""

    def __init__(self, spec: TenantTable, setting: str, pair: str):
        super().__init__(spec, f"{setting} is one fixed pair; use auth_file or a table to "
                               "receive more")
        key, _, secret = pair.partition(":")
        self._row = {spec.keys[0]: key, "password": secret}
        self.columns = set(self._row)

    async def read_tenant(self, tx: Transaction, tenant: str) -> list[Record]:
        return [dict(self._row)]

    async def find(self, tx: Transaction, tenant: str, row: Record) -> list[tuple[str, Record]]:
        key = self.spec.keys[0]
        return [("", dict(self._row))] if row.get(key) == self._row[key] else []


def _operator_place(spec: TenantTable, config: Config, store: Store,
                    user_file: _JsonFile | None) -> Place:
    server, api = config.server, config.api
    sources = {
        "credentials": (server.auth_table, server.auth_file, server.auth, "[server] auth"),
        "users": (api.auth_user_table, api.auth_file, api.auth, "[api] auth"),
        "user_groups": (api.auth_group_table, api.auth_file, "", "[api] auth"),
    }
    table, path, pair, setting = sources[spec.kind]
    if table:
        return TablePlace(spec, store, table, config.server.multi_tenancy)
    if path and spec.kind == "credentials":
        return CredentialFilePlace(spec, path)
    if path and user_file is not None:
        return UserFilePlace(spec, user_file)
    if pair:
        return SinglePlace(spec, setting, pair)
    return Place(spec, f"this server has no {spec.setting} (nor a file or pair) to receive it")


async def resolve_places(config: Config, store: Store) -> dict[str, Place]:
    """Every kind of TABLES on this server, prepared (columns known, files read)."""
    user_file = _JsonFile(config.api.auth_file, []) if config.api.auth_file else None
    places: dict[str, Place] = {}
    for spec in TABLES:
        place = (_operator_place(spec, config, store, user_file) if spec.operators
                 else TablePlace(spec, store, spec.table, True))
        await place.prepare()
        places[spec.kind] = place
    return places
