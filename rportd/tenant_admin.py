"""What operators do to tenants: install (a tenant and its first admin at once) and remove every
trace of one. The API (api/tenants.py) parses and answers; this module changes the databases.

Removal order, so nothing comes back: first the operator's rows (credentials, users, groups) and
personal tokens go in one transaction, so no new agent or user logs in and every token of a
removed user stops working (auth/tokens.py binds a token to its account); then the tenant's live
agents are closed and its clients forgotten in memory; then rportd's own rows (clients, jobs,
multi-jobs, client groups, group permissions, audit log, the tenants row) go in a second
transaction. The eviction and the second delete run twice, for a registration that was already
past its login when the first transaction committed. Before each eviction the tenant's running
commands are stopped (a multi-client job in turn would otherwise record its next parts, failed,
after the delete).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from .errors import Conflict, StoreError
from .registry import Registry
from .store import Store
from .store.base import Transaction
from .tenancy import Scope
from .tenants import TenantTables

__all__ = ["Install", "install_tenant", "remove_tenant", "OWN_TENANT_TABLES", "ADMIN_GROUP",
           "TenantHasClients"]

log = logging.getLogger("rportd.tenants")

ADMIN_GROUP = "Administrators"
# rportd's own tables with a tenant column (migrations 0002, 0005, 0006), and `tenants` by name
OWN_TENANT_TABLES = ("clients", "jobs", "multi_jobs", "client_groups", "group_permissions",
                     "audit_log")
_CLOSE_WAIT = 10.0


class TenantHasClients(Conflict):
    code = "ERR_CODE_TENANT_HAS_CLIENTS"


@dataclass(frozen=True)
class Install:
    name: str
    username: str
    stored_password: str  # already hashed
    quotas: dict[str, int]


def _exact(store: Store, column: str, trimmed: bool) -> str:
    """`column` equals the bound value byte for byte (trimmed of blanks for operators' tables,
    where ' J ' is tenant J), whatever the collation."""
    value = f"TRIM({column})" if trimmed else column
    if store.dialect == "mysql":
        return f"BINARY {value} = BINARY ?"
    return f"{value} = ? COLLATE BINARY"


async def _username_taken(tx: Transaction, store: Store, table: str, username: str) -> bool:
    q = store.quote
    rows = await tx.fetchall(f"SELECT {q('username')} FROM {q(table)} WHERE {q('username')} = ?",
                             (username,))
    return bool(rows)  # on a case-insensitive table `Bob` blocks `bob`: the unique index would


async def install_tenant(tables: TenantTables, users: str, groups: str, job: Install) -> None:
    """The tenants row, the user and its `Administrators` membership (with every permission) in
    one transaction. Conflict (409) ERR_CODE_TENANT_EXISTS or ERR_CODE_USERNAME_TAKEN: only the
    operator calls this, and the operator may know every tenant and username."""
    store = tables.store
    q = store.quote
    if await tables.get(job.name) is not None:
        raise Conflict(f"tenant {job.name!r} exists already", code="ERR_CODE_TENANT_EXISTS")
    try:
        async with store.transaction() as tx:
            if await _username_taken(tx, store, users, job.username):
                raise Conflict(f"username {job.username!r} is taken (usernames are unique "
                               "across tenants)", code="ERR_CODE_USERNAME_TAKEN")
            await tables.insert(tx, job.name, job.quotas)
            await tx.execute(f"INSERT INTO {q(users)} ({q('username')}, {q('password')}, "
                             f"{q('tenant')}) VALUES (?, ?, ?)",
                             (job.username, job.stored_password, job.name))
            await tx.execute(f"INSERT INTO {q(groups)} ({q('username')}, {q('group')}, "
                             f"{q('tenant')}) VALUES (?, ?, ?)",
                             (job.username, ADMIN_GROUP, job.name))
            await tx.execute(f"INSERT INTO group_permissions (tenant, {q('group')}, permissions) "
                             "VALUES (?, ?, ?)", (job.name, ADMIN_GROUP, '["*"]'))
    except StoreError:
        if await tables.get(job.name) is not None:  # lost a race with another install
            raise Conflict(f"tenant {job.name!r} exists already",
                           code="ERR_CODE_TENANT_EXISTS") from None
        raise


async def remove_tenant(tables: TenantTables, registry: Registry, name: str, force: bool,
                        stop_work: Callable[[str], Awaitable[None]] | None = None
                        ) -> dict[str, int]:
    """Every row of `name` in every table, and its clients in memory; rows removed per table.
    TenantHasClients (409) while clients are connected, unless `force` (they are closed).
    `stop_work(name)` (the job service's forget_tenant) runs before the agents are closed, so
    nothing in flight for the tenant writes a row after its rows are deleted."""
    connected, _ = registry.counts(Scope(name))
    if connected and not force:
        raise TenantHasClients(f"tenant {name!r} has {connected} connected client(s); "
                               "disconnect them or delete with force=true")
    removed = await _delete_logins(tables, name)
    for _ in range(2):
        if stop_work is not None:
            await stop_work(name)
        await _close_all(registry, name)
        for table, count in (await _delete_own_rows(tables, name)).items():
            removed[table] = removed.get(table, 0) + count
    log.warning("tenant %r removed: %s", name, removed)
    return removed


async def _delete_logins(tables: TenantTables, name: str) -> dict[str, int]:
    store = tables.store
    q = store.quote
    removed: dict[str, int] = {}
    async with store.transaction() as tx:
        for table in tables.operator_tables:
            removed[table] = await tx.execute(
                f"DELETE FROM {q(table)} WHERE {_exact(store, q('tenant'), True)}", (name,))
        removed["api_tokens"] = await tx.execute(
            f"DELETE FROM api_tokens WHERE {_exact(store, 'tenant', False)}", (name,))
    return removed


async def _close_all(registry: Registry, name: str) -> None:
    sessions = registry.evict_tenant(name)
    for session in sessions:
        session.close()
    if not sessions:
        return
    _, pending = await asyncio.wait([asyncio.ensure_future(s.wait_closed()) for s in sessions],
                                    timeout=_CLOSE_WAIT)
    for waiter in pending:
        waiter.cancel()


async def _delete_own_rows(tables: TenantTables, name: str) -> dict[str, int]:
    store = tables.store
    removed: dict[str, int] = {}
    async with store.transaction() as tx:
        for table in OWN_TENANT_TABLES:
            removed[table] = await tx.execute(
                f"DELETE FROM {table} WHERE {_exact(store, 'tenant', False)}", (name,))
        removed["tenants"] = await tx.execute(
            f"DELETE FROM tenants WHERE {_exact(store, 'name', False)}", (name,))
    return removed
