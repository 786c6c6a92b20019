"""Client credentials: who may connect as an agent, and in which tenant.

Sources, as rport: `auth` (one id:password), `auth_file` (JSON map, re-read when it changes),
`auth_table` (read on every connect, so credential changes need no restart). Passwords may be
plaintext (constant-time compare) or bcrypt. Every check goes through the agent port's LoginGate:
throttled per credential id and per source address (with openrport's ban), on a password pool
that API logins do not share, with a dummy bcrypt for unknown ids. Ids and tenants are compared
exactly in Python after the SQL, whatever the table's collation.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ..config import Config
from ..errors import DatabaseUnavailable, MethodNotAllowed, StoreError
from ..store import Store
from ..store.base import Transaction
from ..tenancy import Scope, exact_equals, normalize_tenant, same_identity
from .gate import LoginGate, LoginRefused
from .passwords import PasswordPool, PoolBusy, is_bcrypt
from .throttle import ThrottlePolicy
from .watched_file import WatchedJsonFile

log = logging.getLogger("rportd.auth")
Guard = Callable[[Transaction], Awaitable[None]]

__all__ = ["ClientCredential", "ClientAuth", "SingleClientAuth", "FileClientAuth",
           "TableClientAuth", "client_auth_from_config", "agent_gate"]


@dataclass(frozen=True)
class ClientCredential:
    """An authenticated agent login. `tenant` is '' when the client is orphaned or when
    multi_tenancy is off."""

    id: str
    tenant: str


class ClientAuth:
    """Base: look up the stored password (and tenant) for an id and verify it."""

    writable = False

    def __init__(self, gate: LoginGate | None = None) -> None:
        self.gate = gate or LoginGate("agent", ThrottlePolicy(ban_addresses=True),
                                      PasswordPool("agent", queue=32))

    async def _lookup(self, auth_id: str) -> tuple[str, str] | None:
        raise NotImplementedError

    async def list_ids(self, scope: Scope) -> list[str]:
        """Credential ids the scope may see (sources without tenants: only an unscoped caller)."""
        return []

    async def create(self, auth_id: str, stored_password: str, tenant: str,
                     guard: Guard | None = None) -> bool:
        """False when the id exists already. `guard` runs first inside the inserting
        transaction (a quota check) and may raise."""
        raise MethodNotAllowed("client credentials are read-only with this auth source",
                               code="ERR_CODE_CLIENT_AUTH_RO")

    async def delete(self, auth_id: str, scope: Scope) -> bool:
        """False when the scope has no such credential."""
        raise MethodNotAllowed("client credentials are read-only with this auth source",
                               code="ERR_CODE_CLIENT_AUTH_RO")

    async def authenticate(self, auth_id: str, password: str, address: str,
                           tenant: str | None = None) -> ClientCredential | None:
        """The credential when the password matches; None when it does not, the id is unknown
        (after a dummy check of the same cost), or the throttle refuses `address`. With
        `tenant` (the Host's subdomain), another tenant's credential counts as unknown."""
        wait = self.gate.throttle.retry_after(auth_id, address)
        if wait > 0:  # banned: not even a database lookup
            log.debug("agent login for %r from %s refused: banned for %.0fs", auth_id, address,
                      wait)
            return None
        found = await self._lookup(auth_id)
        if found is not None and tenant is not None and found[1] != tenant:
            found = None
        try:
            ok = await self.gate.check(auth_id, address, password,
                                       found[0] if found else None)
        except (LoginRefused, PoolBusy) as exc:
            log.debug("agent login for %r from %s refused: %s", auth_id, address, exc.detail)
            return None
        return ClientCredential(auth_id, found[1]) if ok and found else None


class SingleClientAuth(ClientAuth):
    def __init__(self, auth: str, gate: LoginGate | None = None):
        super().__init__(gate)
        self._id, _, self._password = auth.partition(":")
        if is_bcrypt(self._password):
            self.gate.learn(self._password)
        else:
            self.gate.plaintext_only()

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

    def __init__(self, path: str, gate: LoginGate | None = None):
        super().__init__(gate)
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

    def __init__(self, store: Store, table: str, multi_tenancy: bool,
                 gate: LoginGate | None = None):
        super().__init__(gate)
        self._store = store
        self._quote = store.quote
        self._multi_tenancy = multi_tenancy
        q = store.quote
        self._q_table, self._q_id, self._q_tenant = q(table), q("id"), q("tenant")
        tenant = self._q_tenant if multi_tenancy else "''"
        self._select = (f"SELECT {self._q_id}, {q('password')}, {tenant} FROM {self._q_table} "
                        f"WHERE {self._q_id} = ?")
        self._select_all = f"SELECT {self._q_id}, {tenant} FROM {self._q_table}"

    def _visible(self, scope: Scope, tenant: Any) -> bool:
        """Rule 5: with tenancy, only the caller's tenant's rows exist (compared exactly)."""
        return scope.tenant is None or not self._multi_tenancy or \
            normalize_tenant(tenant) == scope.tenant

    async def _exact_rows(self, auth_id: str) -> list[tuple[Any, ...]]:
        """Rows whose id is auth_id byte for byte (the SQL match may be case/pad-insensitive)."""
        rows = await self._store.fetchall(self._select, (auth_id,))
        return [row for row in rows if same_identity(row[0], auth_id)]

    async def _lookup(self, auth_id: str) -> tuple[str, str] | None:
        rows = await self._exact_rows(auth_id)
        if len(rows) != 1:
            return None
        return str(rows[0][1]), normalize_tenant(rows[0][2])

    async def list_ids(self, scope: Scope) -> list[str]:
        """Filtered in Python: a tenant stored as ' J ' belongs to J, and `j` is not `J`."""
        if scope.sees_nothing:
            return []
        rows = await self._store.fetchall(self._select_all)
        return sorted(str(row[0]) for row in rows if self._visible(scope, row[1]))

    async def create(self, auth_id: str, stored_password: str, tenant: str,
                     guard: Guard | None = None) -> bool:
        columns, values = f"{self._q_id}, {self._quote('password')}", [auth_id, stored_password]
        if self._multi_tenancy:
            columns += f", {self._q_tenant}"
            values.append(tenant)
        marks = ", ".join("?" for _ in values)
        try:
            async with self._store.transaction() as tx:
                if guard is not None:
                    await guard(tx)
                await tx.execute(f"INSERT INTO {self._q_table} ({columns}) VALUES ({marks})",
                                 values)
        except DatabaseUnavailable:
            raise  # asking again whether the id exists would wait out a second deadline
        except StoreError:
            if await self._store.fetchone(f"SELECT 1 FROM {self._q_table} WHERE {self._q_id} = ?",
                                          (auth_id,)):
                return False
            raise
        return True

    async def delete(self, auth_id: str, scope: Scope) -> bool:
        """Deletes only the exact row of the scope's tenant (the id's index still used)."""
        if scope.sees_nothing:
            return False
        rows = [row for row in await self._exact_rows(auth_id) if self._visible(scope, row[2])]
        if len(rows) != 1:
            return False
        sql = (f"DELETE FROM {self._q_table} WHERE {self._q_id} = ? AND "
               f"{exact_equals(self._store, self._q_id)}")
        params: list[Any] = [auth_id, auth_id]
        if self._multi_tenancy:  # the row may have moved to another tenant since the SELECT
            sql += f" AND {exact_equals(self._store, self._q_tenant)}"
            params.append(rows[0][2])
        return await self._store.execute(sql, params) > 0


def agent_gate(config: Config) -> LoginGate:
    """The agent port's gate: openrport's per-address ban, and a small pool of its own."""
    policy = ThrottlePolicy(max_failed_login=config.server.max_failed_login,
                            ban_time=float(config.server.ban_time), ban_addresses=True)
    return LoginGate("agent", policy, PasswordPool("agent", queue=32))


def client_auth_from_config(config: Config, store: Store) -> ClientAuth | None:
    server = config.server
    gate = agent_gate(config)
    if server.auth:
        return SingleClientAuth(server.auth, gate)
    if server.auth_file:
        return FileClientAuth(server.auth_file, gate)
    if server.auth_table:
        return TableClientAuth(store, server.auth_table, server.multi_tenancy, gate)
    return None
