"""Who may see what: the tenancy rules of DESIGN.md, written in one place.

Every client-scoped lookup goes through a `Scope`: the caller's view of the world. With
multi_tenancy off a scope sees everything (rport's behaviour); with it on a scope sees exactly one
tenant, and a scope without a tenant sees nothing. The registry and the store queries take a scope,
so a handler cannot forget to apply it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .config import Config
from .errors import ConfigError
from .store import Store

__all__ = ["Scope", "normalize_tenant", "check_tenancy_schema"]


def normalize_tenant(value: Any) -> str:
    """Tenant columns may be VARCHAR or INT; compare as strings. NULL, '' or blank is no tenant."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return str(value).strip()


@dataclass(frozen=True)
class Scope:
    """The set of clients a caller may see. `tenant is None` means every tenant (no tenancy)."""

    tenant: str | None

    @property
    def sees_nothing(self) -> bool:
        return self.tenant == ""

    @classmethod
    def for_user(cls, multi_tenancy: bool, user_tenant: str) -> Scope:
        return cls(normalize_tenant(user_tenant) if multi_tenancy else None)


_REQUIRED_COLUMNS = {
    "[server] auth_table": ("id", "password", "tenant"),
    "[api] auth_user_table": ("username", "password", "tenant"),
    "[api] auth_group_table": ("username", "group", "tenant"),
}


async def check_tenancy_schema(config: Config, store: Store) -> None:
    """Refuse to start when a tenancy table is missing, lacks a column, or names a user twice."""
    if not config.server.multi_tenancy:
        return
    tables = {
        "[server] auth_table": config.server.auth_table,
        "[api] auth_user_table": config.api.auth_user_table,
        "[api] auth_group_table": config.api.auth_group_table,
    }
    for setting, table in tables.items():
        columns = await store.table_columns(table)
        if columns is None:
            raise ConfigError(setting, f"table {table!r} does not exist in the database; create it "
                                       "(rportd migrate -c FILE) or fix the name")
        lowered = {c.lower() for c in columns}
        missing = [c for c in _REQUIRED_COLUMNS[setting] if c not in lowered]
        if missing:
            raise ConfigError(setting, f"table {table!r} has no column {', '.join(missing)}; "
                                       "multi_tenancy needs a tenant column in each auth table")
    await _check_unique_usernames(config.api.auth_user_table, store)


async def _check_unique_usernames(table: str, store: Store) -> None:
    rows = await store.fetchall(
        f"SELECT {store.quote('username')} FROM {store.quote(table)} "
        f"GROUP BY {store.quote('username')} HAVING COUNT(*) > 1 ORDER BY 1 LIMIT 20")
    if rows:
        names = ", ".join(repr(str(row[0])) for row in rows)
        raise ConfigError("[api] auth_user_table",
                          f"usernames must be unique across tenants; duplicated: {names}")
