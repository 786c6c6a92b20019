"""Client credentials: who may connect as an agent, and in which tenant.

Sources, as rport: `auth` (one id:password), `auth_file` (JSON map, re-read when it changes),
`auth_table` (read on every connect, so credential changes need no restart). Passwords may be
plaintext (constant-time compare) or bcrypt; bcrypt runs off the event loop, with a cache so a
reconnect storm does not cost one bcrypt per agent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..config import Config
from ..errors import MethodNotAllowed, StoreError
from ..store import Store
from ..tenancy import Scope, normalize_tenant
from .passwords import VerifyCache
from .watched_file import WatchedJsonFile

__all__ = ["ClientCredential", "ClientAuth", "SingleClientAuth", "FileClientAuth",
           "TableClientAuth", "client_auth_from_config"]


@dataclass(frozen=True)
class ClientCredential:
    """An authenticated agent login. `tenant` is '' when the client is orphaned or when
    multi_tenancy is off."""

    id: str
    tenant: str


class ClientAuth:
    """Base: look up the stored password (and tenant) for an id and verify it."""

    writable = False

    def __init__(self) -> None:
        self._cache = VerifyCache()

    async def _lookup(self, auth_id: str) -> tuple[str, str] | None:
        raise NotImplementedError

    async def list_ids(self, scope: Scope) -> list[str]:
        """Credential ids the scope may see (sources without tenants: only an unscoped caller)."""
        return []

    async def create(self, auth_id: str, stored_password: str, tenant: str) -> bool:
        """False when the id exists already."""
        raise MethodNotAllowed("client credentials are read-only with this auth source",
                               code="ERR_CODE_CLIENT_AUTH_RO")

    async def delete(self, auth_id: str, scope: Scope) -> bool:
        """False when the scope has no such credential."""
        raise MethodNotAllowed("client credentials are read-only with this auth source",
                               code="ERR_CODE_CLIENT_AUTH_RO")

    async def authenticate(self, auth_id: str, password: str) -> ClientCredential | None:
        found = await self._lookup(auth_id)
        if found is None:
            return None
        stored, tenant = found
        if not await self._cache.verify(password, stored):
            return None
        return ClientCredential(auth_id, tenant)


class SingleClientAuth(ClientAuth):
    def __init__(self, auth: str):
        super().__init__()
        self._id, _, self._password = auth.partition(":")

    async def _lookup(self, auth_id: str) -> tuple[str, str] | None:
        return (self._password, "") if auth_id == self._id else None

    async def list_ids(self, scope: Scope) -> list[str]:
        return [self._id] if scope.tenant is None else []


def _id_password_map(data: Any) -> dict[str, str]:
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ValueError("must be a JSON object of id: password")
    return data


class FileClientAuth(ClientAuth):
    """A JSON object {"id": "password", ...}, re-read when it changes."""

    def __init__(self, path: str):
        super().__init__()
        self._file: WatchedJsonFile[dict[str, str]] = WatchedJsonFile(
            path, _id_password_map, "[server] auth_file", {})

    async def load(self) -> None:
        await self._file.load()

    async def _lookup(self, auth_id: str) -> tuple[str, str] | None:
        stored = (await self._file.current()).get(auth_id)
        return None if stored is None else (stored, "")

    async def list_ids(self, scope: Scope) -> list[str]:
        return [] if scope.tenant is not None else sorted(await self._file.current())


class TableClientAuth(ClientAuth):
    writable = True

    def __init__(self, store: Store, table: str, multi_tenancy: bool):
        super().__init__()
        self._store = store
        self._quote = store.quote
        self._table = table
        self._multi_tenancy = multi_tenancy
        q = store.quote
        tenant = q("tenant") if multi_tenancy else "''"
        self._select = f"SELECT {q('password')}, {tenant} FROM {q(table)} WHERE {q('id')} = ?"
        self._q_table, self._q_id, self._q_tenant = q(table), q("id"), q("tenant")

    def _where_scope(self, scope: Scope) -> tuple[str, tuple[str, ...]]:
        """Rule 5 in SQL: with tenancy, only the caller's tenant's rows exist."""
        if scope.tenant is None or not self._multi_tenancy:
            return "", ()
        return f" AND {self._q_tenant} = ?", (scope.tenant,)

    async def _lookup(self, auth_id: str) -> tuple[str, str] | None:
        row = await self._store.fetchone(self._select, (auth_id,))
        if row is None:
            return None
        return str(row[0]), normalize_tenant(row[1])

    async def list_ids(self, scope: Scope) -> list[str]:
        if scope.sees_nothing:
            return []
        where, params = self._where_scope(scope)
        rows = await self._store.fetchall(
            f"SELECT {self._q_id} FROM {self._q_table} WHERE 1 = 1{where} ORDER BY {self._q_id}",
            params)
        return [str(row[0]) for row in rows]

    async def create(self, auth_id: str, stored_password: str, tenant: str) -> bool:
        columns, values = f"{self._q_id}, {self._quote('password')}", [auth_id, stored_password]
        if self._multi_tenancy:
            columns += f", {self._q_tenant}"
            values.append(tenant)
        marks = ", ".join("?" for _ in values)
        try:
            await self._store.execute(f"INSERT INTO {self._q_table} ({columns}) VALUES ({marks})",
                                      values)
        except StoreError:
            if await self._store.fetchone(f"SELECT 1 FROM {self._q_table} WHERE {self._q_id} = ?",
                                          (auth_id,)):
                return False
            raise
        return True

    async def delete(self, auth_id: str, scope: Scope) -> bool:
        if scope.sees_nothing:
            return False
        where, params = self._where_scope(scope)
        count = await self._store.execute(
            f"DELETE FROM {self._q_table} WHERE {self._q_id} = ?{where}", (auth_id, *params))
        return count > 0


def client_auth_from_config(config: Config, store: Store) -> ClientAuth | None:
    server = config.server
    if server.auth:
        return SingleClientAuth(server.auth)
    if server.auth_file:
        return FileClientAuth(server.auth_file)
    if server.auth_table:
        return TableClientAuth(store, server.auth_table, server.multi_tenancy)
    return None
