"""The declared list of tenant-owned tables: what a tenant export carries and an import writes.

A new tenant-owned table is one line in `TABLES`. Credential tables are the operator's own
(`[server] auth_table`, `[api] auth_user_table`, `[api] auth_group_table`); their names come from
the config, and where the config names a file (`auth_file`) or one pair (`auth`) instead, the
kind is read from (and written to) that.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TenantTable", "TABLES", "BY_KIND", "KINDS"]


@dataclass(frozen=True)
class TenantTable:
    """One tenant-owned table.

    `keys` identify a row within its tenant; with `global_keys` they are unique across tenants
    (a credential id, a username, a token id), so the same key in another tenant is a conflict.
    `secret` names the column holding a secret and says how the archive keeps it.
    `generated` columns are assigned by the target (an autoincrement id) and never copied.
    `setting` is the config key naming the table when it is the operator's, not rportd's own.
    """

    kind: str
    table: str
    keys: tuple[str, ...]
    global_keys: bool = False
    secret: str = ""
    tenant_column: str = "tenant"
    generated: tuple[str, ...] = ()
    setting: str = ""

    @property
    def operators(self) -> bool:
        return bool(self.setting)


# In insertion order (a row never precedes what it names); deletion runs backwards.
TABLES: tuple[TenantTable, ...] = (
    TenantTable("tenants", "tenants", (), tenant_column="name"),
    TenantTable("credentials", "", ("id",), global_keys=True, setting="[server] auth_table",
                secret="password: as stored (bcrypt hash, or plaintext unless --hash-plaintext)"),
    TenantTable("users", "", ("username",), global_keys=True, setting="[api] auth_user_table",
                secret="password: as stored (a bcrypt hash)"),
    TenantTable("user_groups", "", ("username", "group"), setting="[api] auth_group_table"),
    TenantTable("group_permissions", "group_permissions", ("group",)),
    TenantTable("api_tokens", "api_tokens", ("id",), global_keys=True,
                secret="secret_hash: a hash; the token itself is never stored"),
    TenantTable("clients", "clients", ("id",)),
    TenantTable("client_groups", "client_groups", ("id",)),
    TenantTable("multi_jobs", "multi_jobs", ("jid",)),
    TenantTable("jobs", "jobs", ("jid",)),
    # Audit entries have no key of their own: every column is the key (identical entries are
    # counted, not merged).
    TenantTable("audit_log", "audit_log",
                ("at", "username", "action", "target", "result", "source", "details"),
                generated=("id",)),
)

BY_KIND = {table.kind: table for table in TABLES}
KINDS = tuple(table.kind for table in TABLES)
