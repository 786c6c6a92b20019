"""The groups of every tenant in `client_groups`, each call scoped to one caller, and the
resolution of group ids into clients for commands."""

from __future__ import annotations

import asyncio
import json
import weakref
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from typing import Any

from ..errors import BadRequest, Conflict, Forbidden, NotFound
from ..registry import ClientRecord, Registry
from ..store import Store
from ..tenancy import Scope, exact_equals, same_identity
from .matching import ClientGroup, Member, in_any, members_of
from .parsing import INVALID_ID, check_group_id, stored_params

__all__ = ["ClientGroups", "ClientGroupNotFound", "clients_in_groups", "MAX_GROUPS_PER_TENANT",
           "MAX_GROUP_IDS"]

MAX_GROUPS_PER_TENANT = 500  # bounds the work of a listing: groups x clients x patterns
MAX_GROUP_IDS = 100  # group ids one resolution may name
_INLINE_WORK = 20_000  # groups x clients matched on the event loop; more goes to a thread
_CACHED_TENANTS = 64  # tenants whose last listing's members are kept
_CACHED_MEMBERS = 100_000  # a listing with more members (over all its groups) is not kept


class ClientGroupNotFound(NotFound):
    """No such group in the caller's tenant (also when another tenant has one by that id).
    `group_id` says which one, for the caller's own use; the text never names it."""

    code = "ERR_CODE_CLIENT_GROUP_NOT_FOUND"

    def __init__(self, group_id: str = ""):
        super().__init__("client group not found")
        self.group_id = group_id


class ClientGroups:
    """The groups of every tenant in `client_groups`, each call scoped to one caller. Writes
    of a tenant are serialised (its lock), so its count limit and `409` hold under
    concurrency."""

    def __init__(self, store: Store, registry: Registry):
        self._store = store
        self._registry = registry
        q = store.quote
        self._table = q("client_groups")
        self._where = (f"{q('tenant')} = ? AND {exact_equals(store, q('tenant'))}")
        self._where_id = (f"{self._where} AND {q('id')} = ? AND {exact_equals(store, q('id'))}")
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary())
        # tenant -> (registry version and groups, their members), least recently used first
        self._cache: OrderedDict[str | None, tuple[Hashable, list[list[Member]]]] = (
            OrderedDict())

    def _lock(self, tenant: str) -> asyncio.Lock:
        lock = self._locks.get(tenant)
        if lock is None:
            lock = self._locks[tenant] = asyncio.Lock()
        return lock

    @staticmethod
    def _tenant(scope: Scope) -> str:
        """Without multi-tenancy every group is kept under tenant '' (as clients are)."""
        return "" if scope.tenant is None else scope.tenant

    @staticmethod
    def _writable(scope: Scope) -> str:
        if scope.sees_nothing:
            raise Forbidden("a user without a tenant cannot change client groups",
                            code="ERR_CODE_NO_TENANT")
        return ClientGroups._tenant(scope)

    # ------------------------------------------------------------------ reads
    async def find_all(self, scope: Scope) -> list[ClientGroup]:
        """The scope's groups, by id ignoring case (rport's order), then exactly."""
        if scope.sees_nothing:
            return []
        tenant = self._tenant(scope)
        rows = await self._store.fetchall(
            f"SELECT tenant, id, description, params FROM {self._table} WHERE {self._where}",
            (tenant, tenant))
        groups = [_group(row) for row in rows if same_identity(row[0], tenant)]
        return sorted(groups, key=lambda g: (g.id.lower(), g.id))

    async def get(self, scope: Scope, group_id: str) -> ClientGroup:
        """The group, or ClientGroupNotFound — the same for another tenant's as a missing one."""
        check_group_id(group_id)
        if scope.sees_nothing:
            raise ClientGroupNotFound(group_id)
        tenant = self._tenant(scope)
        rows = await self._store.fetchall(
            f"SELECT tenant, id, description, params FROM {self._table} WHERE {self._where_id}",
            (tenant, tenant, group_id, group_id))
        exact = [row for row in rows
                 if same_identity(row[0], tenant) and same_identity(row[1], group_id)]
        if not exact:
            raise ClientGroupNotFound(group_id)
        return _group(exact[0])

    async def members(self, scope: Scope, groups: Sequence[ClientGroup]
                      ) -> list[list[Member]]:
        """Each group's members among the scope's clients (connected or not). Kept while
        neither the groups nor the scope's clients change: a big tenant's listing costs
        seconds (see README), its repetition nothing."""
        key = (self._registry.version(scope), tuple(g.key for g in groups))
        cached = self._cache.get(scope.tenant)
        if cached is not None and cached[0] == key:
            self._cache.move_to_end(scope.tenant)
            return cached[1]
        clients = [Member.of(r) for r in self._registry.list(scope)]
        if len(groups) * len(clients) <= _INLINE_WORK:
            found = members_of(groups, clients)
        else:
            found = await asyncio.to_thread(members_of, groups, clients)
        self._remember(scope.tenant, key, found)
        return found

    def _remember(self, tenant: str | None, key: Hashable, found: list[list[Member]]) -> None:
        self._cache.pop(tenant, None)
        if sum(len(m) for m in found) > _CACHED_MEMBERS:
            return
        self._cache[tenant] = (key, found)
        while len(self._cache) > _CACHED_TENANTS:
            self._cache.popitem(last=False)

    async def clients_in(self, scope: Scope, groups: Sequence[ClientGroup],
                         connected_only: bool) -> list[ClientRecord]:
        """The scope's clients in any of `groups`, each once, sorted by id."""
        records = [r for r in self._registry.list(scope) if r.connected or not connected_only]
        clients = [Member.of(r) for r in records]
        if len(groups) * len(clients) <= _INLINE_WORK:
            chosen = in_any(groups, clients)
        else:
            chosen = await asyncio.to_thread(in_any, groups, clients)
        return sorted((records[at] for at in chosen), key=lambda r: r.id)

    async def to_json(self, scope: Scope, groups: Sequence[ClientGroup]) -> list[dict[str, Any]]:
        found = await self.members(scope, groups)
        return [group.to_json(members) for group, members in zip(groups, found, strict=True)]

    # ------------------------------------------------------------------ writes
    async def create(self, scope: Scope, group: ClientGroup) -> None:
        """Conflict (409) when the caller's tenant has the id; other tenants never conflict."""
        tenant = self._writable(scope)
        async with self._lock(tenant):
            if await self._exists(tenant, group.id):
                raise Conflict("a client group with this id already exists",
                               code="ERR_CODE_ALREADY_EXIST")
            await self._insert(tenant, group)

    async def save(self, scope: Scope, group: ClientGroup) -> bool:
        """rport's PUT: replace the group, or create it; True when it was created."""
        tenant = self._writable(scope)
        async with self._lock(tenant):
            updated = await self._store.execute(
                f"UPDATE {self._table} SET description = ?, params = ? WHERE {self._where_id}",
                (group.description, _params_text(group), tenant, tenant, group.id, group.id))
            if updated:
                return False
            await self._insert(tenant, group)
            return True

    async def delete(self, scope: Scope, group_id: str) -> None:
        check_group_id(group_id)
        if scope.sees_nothing:
            raise ClientGroupNotFound(group_id)
        tenant = self._tenant(scope)
        async with self._lock(tenant):
            deleted = await self._store.execute(
                f"DELETE FROM {self._table} WHERE {self._where_id}",
                (tenant, tenant, group_id, group_id))
        if not deleted:
            raise ClientGroupNotFound(group_id)

    async def _exists(self, tenant: str, group_id: str) -> bool:
        rows = await self._store.fetchall(
            f"SELECT tenant, id FROM {self._table} WHERE {self._where_id}",
            (tenant, tenant, group_id, group_id))
        return any(same_identity(r[0], tenant) and same_identity(r[1], group_id) for r in rows)

    async def _insert(self, tenant: str, group: ClientGroup) -> None:
        row = await self._store.fetchone(
            f"SELECT COUNT(*) FROM {self._table} WHERE {self._where}", (tenant, tenant))
        if row is not None and int(row[0]) >= MAX_GROUPS_PER_TENANT:
            raise BadRequest(f"at most {MAX_GROUPS_PER_TENANT} client groups per tenant; "
                             "delete one first", code="ERR_CODE_CLIENT_GROUP_LIMIT")
        await self._store.execute(
            f"INSERT INTO {self._table} (tenant, id, description, params) VALUES (?, ?, ?, ?)",
            (tenant, group.id, group.description, _params_text(group)))


def _params_text(group: ClientGroup) -> str:
    return json.dumps({name: list(patterns) for name, patterns in group.params.items()})


def _group(row: Sequence[Any]) -> ClientGroup:
    _, group_id, description, params = row
    return ClientGroup(str(group_id), str(description or ""), stored_params(params))


# ---------------------------------------------------------------------- command targets


async def clients_in_groups(groups: ClientGroups, scope: Scope, group_ids: Sequence[str], *,
                            connected_only: bool = True) -> list[ClientRecord]:
    """The caller's clients that belong to any of `group_ids`, each once, sorted by id; only
    connected ones unless `connected_only=False` (rport's multi-client commands take the
    active members). BadRequest for a malformed or too long list; ClientGroupNotFound for the
    first id that is not a group of the caller's tenant (another tenant's id fails exactly
    like a missing one)."""
    if len(group_ids) > MAX_GROUP_IDS:
        raise BadRequest(f"at most {MAX_GROUP_IDS} group ids", code=INVALID_ID)
    for group_id in group_ids:
        check_group_id(group_id)
    by_id = {group.id: group for group in await groups.find_all(scope)}
    wanted = []
    for group_id in dict.fromkeys(group_ids):
        if group_id not in by_id:
            raise ClientGroupNotFound(group_id)
        wanted.append(by_id[group_id])
    return await groups.clients_in(scope, wanted, connected_only)

