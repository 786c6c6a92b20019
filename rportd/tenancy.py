"""Who may see what: the tenancy rules of DESIGN.md, written in one place.

Every client-scoped lookup goes through a `Scope`: the caller's view of the world. With
multi_tenancy off a scope sees everything (rport's behaviour); with it on a scope sees exactly one
tenant, and a scope without a tenant sees nothing. The registry and the store queries take a scope,
so a handler cannot forget to apply it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from .config import Config
from .errors import ConfigError
from .store import Store

__all__ = ["Scope", "normalize_tenant", "check_tenancy_schema", "exact_equals", "same_identity",
           "tenant_tag"]


def normalize_tenant(value: Any) -> str:
    """The one normalisation of tenant values, used by every query and the registry: VARCHAR or
    INT, compared as strings with blanks trimmed. NULL, '', blank and an INT column's 0 are no
    tenant (INT columns are typically NOT NULL DEFAULT 0)."""
    if value is None or isinstance(value, bool):
        return ""
    if isinstance(value, int) and value == 0:
        return ""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return str(value).strip()


def same_identity(stored: Any, wanted: str) -> bool:
    """Usernames, credential ids and client ids compare byte for byte: an operator's table with a
    case- or pad-insensitive collation (rport's MySQL DDL) returns `BOB` or `'bob  '` for
    `bob`, and such rows must not match."""
    if isinstance(stored, bytes):
        stored = stored.decode("utf-8", "replace")
    return isinstance(stored, str) and stored == wanted


def exact_equals(store: Store, column: str) -> str:
    """SQL that compares `column` to one bound value byte for byte, whatever its collation. Used
    beside a plain `column = ?` (which keeps the index) where only the exact row may change."""
    if store.dialect == "mysql":
        return f"BINARY {column} = BINARY ?"
    return f"{column} = ? COLLATE BINARY"


def tenant_tag(tenant: str) -> str:
    """The prefix of credential ids a tenant creates through the API: a readable slug plus a hash
    of the exact tenant, lower-case only, so no two tenants (not `J` and `j` either, whatever
    the collation) share a namespace, and no tenant can probe another's ids."""
    slug = re.sub(r"[^a-z0-9]+", "-", tenant.lower()).strip("-")[:16] or "t"
    return f"{slug}-{hashlib.sha256(tenant.encode('utf-8')).hexdigest()[:8]}"


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
