"""Tenants as records: names, the subdomain a tenant is reached on, and the `tenants` table.

A tenant exists when rportd's `tenants` table has its row (created through the operator API) or
when an operator's own table names it (`auth_table`, `auth_user_table`, `auth_group_table`): such
an *unrecorded* tenant works as before and is listed, with no quotas. Names are compared exactly
(tenancy.normalize_tenant, then byte for byte): `J` and `j` are two tenants whatever a table's
collation says.

Subdomains: DNS names are case-insensitive and every HTTP client sends them in lower case, so
the subdomain label `j` names tenant `j` exactly, and only tenants whose names are lower-case
DNS labels (`[a-z0-9-]`, 1-63, no hyphen at either end) can be reached through one. With
`[api] tenant_domain` set, new tenants must have such names.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .config import Config
from .errors import BadRequest
from .store import Store
from .store.base import Transaction
from .tenancy import normalize_tenant

__all__ = ["Tenant", "TenantTables", "QUOTA_KINDS", "ACTIVE", "SUSPENDED", "STATUSES", "MAX_NAME",
           "check_name", "is_dns_label", "tenant_for_host", "HostBinding", "parse_quotas",
           "exact_column", "utcnow"]

MAX_NAME = 50  # tenants.name is VARCHAR(50), as the tenant columns of rport's DDL
QUOTA_KINDS = ("clients", "credentials", "users", "tunnels", "commands")
ACTIVE, SUSPENDED = "active", "suspended"
STATUSES = (ACTIVE, SUSPENDED)
MAX_QUOTA = 1_000_000
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # fullmatch: `$` would let "j\n" in
_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


def utcnow() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def is_dns_label(name: str) -> bool:
    return bool(_LABEL.fullmatch(name))


def check_name(name: Any, *, dns_label: bool = False) -> str:
    """A tenant name the API accepts: 1-50 of letters, digits, `_ . -`, starting with a letter
    or digit (a DNS label when subdomains are on). BadRequest with ERR_CODE_INVALID_TENANT."""
    if not isinstance(name, str) or not 1 <= len(name) <= MAX_NAME or not _NAME.fullmatch(name):
        raise BadRequest(f"a tenant name is 1-{MAX_NAME} letters, digits, '_', '.' or '-', "
                         "starting with a letter or digit", code="ERR_CODE_INVALID_TENANT")
    if dns_label and not is_dns_label(name):
        raise BadRequest("with [api] tenant_domain set, a tenant name must be a lower-case DNS "
                         "label (a-z, 0-9, '-', at most 63)", code="ERR_CODE_INVALID_TENANT")
    return name


@dataclass(frozen=True)
class HostBinding:
    """What a request's Host says. `tenant` is set on a tenant's subdomain; `bare` is the bare
    domain or any host outside it (no tenant named); `active` is False when subdomains are off."""

    active: bool
    tenant: str | None = None

    @property
    def bare(self) -> bool:
        return self.active and self.tenant is None


def tenant_for_host(host: str, domain: str) -> HostBinding:
    """`j.rport.example.com[:port]` -> tenant `j` under domain `rport.example.com`. A port, a
    trailing dot and letter case are ignored; anything but one label before the domain names
    no tenant."""
    if not domain:
        return HostBinding(False)
    name = host.strip().lower()
    if name.startswith("["):
        return HostBinding(True)  # an IPv6 literal names no tenant
    name = name.rpartition(":")[0] if ":" in name else name
    name = name.rstrip(".")
    label, dot, rest = name.partition(".")
    if dot and rest == domain and is_dns_label(label):
        return HostBinding(True, label)
    return HostBinding(True)


def parse_quotas(body: Any, base: dict[str, int] | None = None) -> dict[str, int]:
    """`{"clients": 10, "tunnels": null, ...}` merged into `base`: a number sets a quota, null
    removes it (unlimited). BadRequest with ERR_CODE_INVALID_QUOTA for anything else."""
    if not isinstance(body, dict):
        raise BadRequest("quotas must be a JSON object", code="ERR_CODE_INVALID_QUOTA")
    merged = dict(base or {})
    for kind, value in body.items():
        if kind not in QUOTA_KINDS:
            raise BadRequest(f"unknown quota {kind!r}; use {', '.join(QUOTA_KINDS)}",
                             code="ERR_CODE_INVALID_QUOTA")
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # JSON's 5.0 is the integer 5
        if value is None:
            merged.pop(kind, None)
        elif isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_QUOTA:
            merged[kind] = value
        else:
            raise BadRequest(f"quota {kind!r} must be a whole number 0..{MAX_QUOTA} or null",
                             code="ERR_CODE_INVALID_QUOTA")
    return merged


def _stored_quotas(text: Any) -> dict[str, int]:
    try:
        loaded = json.loads(text or "{}")
    except ValueError:
        return {}
    if not isinstance(loaded, dict):
        return {}
    return {k: int(v) for k, v in loaded.items() if k in QUOTA_KINDS and isinstance(v, int)}


def exact_column(store: Store, column: str) -> str:
    """A column as its exact bytes: GROUP BY / DISTINCT over it keep `J` and `j` apart on a
    case-insensitive MySQL collation (SQLite columns compare binary unless declared)."""
    return f"BINARY {column}" if store.dialect == "mysql" else column


@dataclass(frozen=True)
class Tenant:
    name: str
    recorded: bool  # False: named only by an operator's own table
    created_at: str | None = None
    status: str = "active"
    quotas: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "recorded": self.recorded, "created_at": self.created_at,
                "status": self.status, "quotas": dict(self.quotas)}


class TenantTables:
    """Queries over `tenants` and the tenant columns of the operators' tables."""

    def __init__(self, config: Config, store: Store):
        self.store = store
        self.config = config
        q = store.quote
        server, api = config.server, config.api
        # (table, setting): the operator's tables that carry a tenant column, when configured
        self.operator_tables = tuple(t for t in (server.auth_table, api.auth_user_table,
                                                 api.auth_group_table) if t)
        self._q = q

    def _row_match(self) -> str:
        q = self._q
        if self.store.dialect == "mysql":
            return f"{q('name')} = ? AND BINARY {q('name')} = BINARY ?"
        return f"{q('name')} = ?"

    def _params(self, name: str) -> tuple[str, ...]:
        return (name, name) if self.store.dialect == "mysql" else (name,)

    async def recorded(self) -> dict[str, Tenant]:
        rows = await self.store.fetchall(
            "SELECT name, created_at, status, quotas FROM tenants ORDER BY name")
        return {str(r[0]): Tenant(str(r[0]), True, str(r[1]), str(r[2]), _stored_quotas(r[3]))
                for r in rows}

    async def named_by_operators(self) -> set[str]:
        """Every tenant an operator's table names (normalised, exact, not empty)."""
        if not self.config.server.multi_tenancy:
            return set()
        found: set[str] = set()
        column = exact_column(self.store, self._q("tenant"))
        for table in self.operator_tables:
            rows = await self.store.fetchall(f"SELECT DISTINCT {column} FROM {self._q(table)}")
            found.update(normalize_tenant(r[0]) for r in rows)
        found.discard("")
        return found

    async def all(self) -> list[Tenant]:
        records = await self.recorded()
        for name in await self.named_by_operators():
            records.setdefault(name, Tenant(name, False))
        return [records[name] for name in sorted(records)]

    async def record(self, name: str) -> Tenant | None:
        """The tenant's row in `tenants`, or None."""
        rows = await self.store.fetchall(
            f"SELECT name, created_at, status, quotas FROM tenants WHERE {self._row_match()}",
            self._params(name))
        for r in rows:
            if str(r[0]) == name:
                return Tenant(name, True, str(r[1]), str(r[2]), _stored_quotas(r[3]))
        return None

    async def get(self, name: str) -> Tenant | None:
        """Recorded, or named by an operator's table (unrecorded), or None."""
        record = await self.record(name)
        if record is not None:
            return record
        return Tenant(name, False) if name in await self.named_by_operators() else None

    async def insert(self, tx: Transaction, name: str, quotas: dict[str, int]) -> None:
        await tx.execute("INSERT INTO tenants (name, created_at, status, quotas) "
                         "VALUES (?, ?, 'active', ?)", (name, utcnow(), json.dumps(quotas)))

    async def update(self, name: str, quotas: dict[str, int], status: str) -> int:
        return await self.store.execute(
            f"UPDATE tenants SET quotas = ?, status = ? WHERE {self._row_match()}",
            (json.dumps(quotas), status, *self._params(name)))

    async def locked_quotas(self, tx: Transaction, name: str) -> dict[str, int]:
        """The tenant's quotas, its row locked until `tx` ends (MySQL: FOR UPDATE; SQLite's
        BEGIN IMMEDIATE already serialises writers), so counting and inserting cannot race."""
        lock = " FOR UPDATE" if self.store.dialect == "mysql" else ""
        rows = await tx.fetchall(f"SELECT name, quotas FROM tenants WHERE {self._row_match()}"
                                 + lock, self._params(name))
        return next((_stored_quotas(r[1]) for r in rows if str(r[0]) == name), {})

    async def count_rows(self, table: str, tenant: str, tx: Transaction | None = None) -> int:
        """Rows of an operator's table in `tenant` (the SQL match may be case-insensitive; the
        count is of exact matches)."""
        sql = f"SELECT {self._q('tenant')} FROM {self._q(table)} WHERE {self._q('tenant')} = ?"
        rows = await (tx.fetchall(sql, (tenant,)) if tx else self.store.fetchall(sql, (tenant,)))
        return sum(1 for r in rows if normalize_tenant(r[0]) == tenant)

    async def counts_by_tenant(self, table: str) -> dict[str, int]:
        column = exact_column(self.store, self._q("tenant"))
        rows = await self.store.fetchall(
            f"SELECT {column}, COUNT(*) FROM {self._q(table)} GROUP BY {column}")
        counts: dict[str, int] = {}
        for value, count in rows:
            tenant = normalize_tenant(value)
            counts[tenant] = counts.get(tenant, 0) + int(count)
        return counts
