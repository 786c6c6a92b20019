"""Writes to the operator's user and group tables (`[api] auth_user_table`/`auth_group_table`)
and to `group_permissions`, for /users and /user-groups. Every row is matched by its exact
username, group and tenant in Python or with `exact_equals`, whatever the tables' collation."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..errors import DatabaseUnavailable, StoreError
from ..store import Store
from ..tenancy import Scope, exact_equals, normalize_tenant, same_identity
from .clients import Guard

__all__ = ["UserRecord", "UserAdmin", "GrantAdmin"]


@dataclass(frozen=True)
class UserRecord:
    username: str
    tenant: str
    groups: tuple[str, ...]

    def to_json(self) -> dict[str, object]:
        return {"username": self.username, "groups": list(self.groups)}


class UserAdmin:
    """The user and group tables of one rportd (only when the user source is a table)."""

    def __init__(self, store: Store, users: str, groups: str, multi_tenancy: bool) -> None:
        self._store = store
        self._tenancy = multi_tenancy
        q = store.quote
        self._users, self._groups = q(users), q(groups)
        self._u, self._g, self._t = q("username"), q("group"), q("tenant")
        self._tenant_sql = self._t if multi_tenancy else "''"

    def _sees(self, scope: Scope, tenant: Any) -> bool:
        if scope.sees_nothing:
            return False
        return scope.tenant is None or not self._tenancy or normalize_tenant(tenant) == scope.tenant

    async def listing(self, scope: Scope) -> list[UserRecord]:
        """Filtered in Python, as credential ids are: a tenant stored as ' J ' belongs to J (one
        normalisation everywhere), which no WHERE on the raw column can express."""
        if scope.sees_nothing:
            return []
        users = await self._store.fetchall(
            f"SELECT {self._u}, {self._tenant_sql} FROM {self._users} ORDER BY {self._u}")
        memberships = await self._memberships(scope)
        return [UserRecord(str(r[0]), normalize_tenant(r[1]),
                           tuple(sorted(memberships.get(str(r[0]), ()))))
                for r in users if self._sees(scope, r[1])]

    async def _memberships(self, scope: Scope) -> dict[str, set[str]]:
        rows = await self._store.fetchall(
            f"SELECT {self._u}, {self._g}, {self._tenant_sql} FROM {self._groups}")
        found: dict[str, set[str]] = {}
        for user, group, tenant in rows:
            if self._sees(scope, tenant) and group is not None:
                found.setdefault(str(user), set()).add(str(group))
        return found

    async def get(self, username: str, scope: Scope) -> UserRecord | None:
        """The user of this scope with exactly this name; None for another tenant's too."""
        rows = await self._store.fetchall(
            f"SELECT {self._u}, {self._tenant_sql} FROM {self._users} WHERE {self._u} = ?",
            (username,))
        rows = [r for r in rows if same_identity(r[0], username) and self._sees(scope, r[1])]
        if len(rows) != 1:
            return None
        tenant = normalize_tenant(rows[0][1])
        groups = await self._store.fetchall(
            f"SELECT {self._u}, {self._g}, {self._tenant_sql} FROM {self._groups} "
            f"WHERE {self._u} = ?", (username,))
        names = sorted({str(g[1]) for g in groups if same_identity(g[0], username)
                        and (not self._tenancy or normalize_tenant(g[2]) == tenant)})
        return UserRecord(username, tenant, tuple(names))

    def _insert(self, table: str, columns: list[str], values: list[Any],
                tenant: str) -> tuple[str, list[Any]]:
        if self._tenancy:
            columns, values = [*columns, self._t], [*values, tenant]
        marks = ", ".join("?" for _ in values)
        return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", values

    async def create(self, username: str, stored_password: str, tenant: str,
                     groups: tuple[str, ...], guard: Guard | None = None) -> bool:
        """False when the username exists (in the caller's namespace: see api/users.py).
        `guard` runs first inside the inserting transaction (the tenant's users quota)."""
        try:
            async with self._store.transaction() as tx:
                if guard is not None:
                    await guard(tx)
                sql, values = self._insert(self._users, [self._u, self._store.quote("password")],
                                           [username, stored_password], tenant)
                await tx.execute(sql, values)
                for group in groups:
                    await tx.execute(*self._insert(self._groups, [self._u, self._g],
                                                   [username, group], tenant))
        except DatabaseUnavailable:
            raise
        except StoreError:
            if await self._store.fetchone(
                    f"SELECT 1 FROM {self._users} WHERE {self._u} = ?", (username,)):
                return False
            raise
        return True

    def _exact_user(self, tenant: str) -> tuple[str, list[Any]]:
        sql = f"{self._u} = ? AND {exact_equals(self._store, self._u)}"
        if self._tenancy:
            return sql + f" AND {exact_equals(self._store, self._t)}", [tenant]
        return sql, []

    async def update(self, user: UserRecord, stored_password: str | None,
                     groups: tuple[str, ...] | None) -> None:
        where, extra = self._exact_user(user.tenant)
        params = [user.username, user.username, *extra]
        async with self._store.transaction() as tx:
            if stored_password is not None:
                await tx.execute(f"UPDATE {self._users} SET {self._store.quote('password')} = ? "
                                 f"WHERE {where}", [stored_password, *params])
            if groups is not None:
                await tx.execute(f"DELETE FROM {self._groups} WHERE {where}", params)
                for group in groups:
                    await tx.execute(*self._insert(self._groups, [self._u, self._g],
                                                   [user.username, group], user.tenant))

    async def delete(self, user: UserRecord) -> bool:
        where, extra = self._exact_user(user.tenant)
        params = [user.username, user.username, *extra]
        async with self._store.transaction() as tx:
            await tx.execute(f"DELETE FROM {self._groups} WHERE {where}", params)
            removed = await tx.execute(f"DELETE FROM {self._users} WHERE {where}", params)
            await tx.execute(f"DELETE FROM api_tokens WHERE username = ? AND "
                             f"{exact_equals(self._store, 'username')} AND "
                             f"{exact_equals(self._store, 'tenant')}",
                             [user.username, user.username, user.tenant])
        return bool(removed > 0)

    async def members(self, tenant: str) -> dict[str, int]:
        """group -> number of members, in exactly this tenant."""
        counts: dict[str, int] = {}
        for _user, group, row_tenant in await self._store.fetchall(
                f"SELECT {self._u}, {self._g}, {self._tenant_sql} FROM {self._groups}"):
            if group is not None and (not self._tenancy or normalize_tenant(row_tenant) == tenant):
                counts[str(group)] = counts.get(str(group), 0) + 1
        return counts

    async def drop_group(self, tenant: str, group: str) -> int:
        sql = f"DELETE FROM {self._groups} WHERE {self._g} = ? AND " \
              f"{exact_equals(self._store, self._g)}"
        params: list[Any] = [group, group]
        if self._tenancy:
            sql += f" AND {exact_equals(self._store, self._t)}"
            params.append(tenant)
        return await self._store.execute(sql, params)


class GrantAdmin:
    """Writes to `group_permissions` (rportd's own, binary-collated table)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        q = store.quote
        self._table, self._t, self._g, self._p = (q("group_permissions"), q("tenant"), q("group"),
                                                  q("permissions"))

    async def put(self, tenant: str, group: str, permissions: tuple[str, ...]) -> None:
        value = json.dumps(list(permissions))
        async with self._store.transaction() as tx:
            changed = await tx.execute(
                f"UPDATE {self._table} SET {self._p} = ? WHERE {self._t} = ? AND {self._g} = ?",
                (value, tenant, group))
            if not changed:
                await tx.execute(f"INSERT INTO {self._table} ({self._t}, {self._g}, {self._p}) "
                                 "VALUES (?, ?, ?)", (tenant, group, value))

    async def delete(self, tenant: str, group: str) -> int:
        return await self._store.execute(
            f"DELETE FROM {self._table} WHERE {self._t} = ? AND {self._g} = ?", (tenant, group))
