"""What a caller may do inside a tenant: permission names, the grants of a tenant's groups
(`group_permissions`), `Administrators` = everything, and narrowing by a token's scopes.

A permission is `<resource>:read` or `<resource>:write`. Names granted or used as scopes may also
be wildcards: `*` (everything), `*:read`, `*:write`, `<resource>:*`.

Who holds what (one rule, `Grants.of`):
- a member of `Administrators` holds every permission;
- in a tenant that has at least one `group_permissions` row, everyone else holds the union of
  their groups' grants (nothing when none of their groups is granted anything);
- otherwise (a tenant that has granted nothing yet) rport's behaviour:
  every user may do everything except manage users and read the audit log, which rport keeps to
  `Administrators` too (`LEGACY`).
Without multi_tenancy the whole server is one tenant whose key is '' (so by default, with no
grants, rport's behaviour is unchanged).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from ..errors import BadRequest, DatabaseUnavailable
from ..store import Store
from ..tenancy import Scope, same_identity

__all__ = ["RESOURCES", "ACTIONS", "ALL", "LEGACY", "ADMINISTRATORS", "ADMIN_ONLY", "expand",
           "parse_names", "Grants", "names"]

RESOURCES = ("clients", "tunnels", "commands", "client-groups", "credentials", "users",
             "auditlog")
ACTIONS = ("read", "write")
ADMINISTRATORS = "Administrators"
ADMIN_ONLY = ("users", "auditlog")
ALL: frozenset[str] = frozenset(f"{r}:{a}" for r in RESOURCES for a in ACTIONS)
LEGACY: frozenset[str] = frozenset(p for p in ALL if p.split(":")[0] not in ADMIN_ONLY)
MAX_NAMES = 64
_NAME = re.compile(r"^(\*|(\*|[a-z-]+):(\*|read|write))$")


def expand(name: str) -> frozenset[str]:
    """The concrete permissions a (possibly wildcard) name stands for; empty when unknown."""
    if not _NAME.match(name):
        return frozenset()
    if name == "*":
        return ALL
    resource, _, action = name.partition(":")
    return frozenset(p for p in ALL if resource in ("*", p.split(":")[0])
                     and action in ("*", p.split(":")[1]))


def parse_names(value: Any, what: str) -> tuple[str, ...]:
    """A JSON list of permission names, each valid; BadRequest naming `what` otherwise."""
    if not isinstance(value, list) or len(value) > MAX_NAMES or \
            not all(isinstance(v, str) for v in value):
        raise BadRequest(f"{what} must be a list of at most {MAX_NAMES} permission names",
                         code="ERR_CODE_INVALID_PERMISSION")
    bad = [v for v in value if not expand(v)]
    if bad:
        raise BadRequest(f"unknown permission {bad[0][:60]!r} in {what}: use <resource>:read, "
                         f"<resource>:write, *:read, *:write or *; resources: "
                         f"{', '.join(RESOURCES)}", code="ERR_CODE_INVALID_PERMISSION")
    return tuple(sorted(set(value)))


def names(granted: Iterable[str]) -> frozenset[str]:
    """The union of what the names stand for."""
    found: set[str] = set()
    for name in granted:
        found |= expand(name)
    return frozenset(found)


def _decode(raw: Any) -> tuple[str, ...]:
    """A stored grant; anything unreadable grants nothing (deny by default)."""
    try:
        value = json.loads(raw if isinstance(raw, str | bytes) else "")
    except ValueError:
        return ()
    return tuple(v for v in value if isinstance(v, str)) if isinstance(value, list) else ()


class Grants:
    """The `group_permissions` of each tenant, read per request (one indexed query), so a
    changed grant takes effect at once; served from memory on SQLite while nothing committed.
    While the database does not answer, the last grants read are used (a change made meanwhile
    could not be read anyway), so what is served from memory (clients, tunnels) stays served;
    a tenant never read fails closed (503)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._cache: dict[str, dict[str, tuple[str, ...]]] = {}
        self._last: dict[str, dict[str, tuple[str, ...]]] = {}
        self._version: int | None = None
        q = store.quote
        self._select = (f"SELECT {q('tenant')}, {q('group')}, {q('permissions')} FROM "
                        f"{q('group_permissions')} WHERE {q('tenant')} = ?")

    async def of_tenant(self, tenant: str) -> dict[str, tuple[str, ...]]:
        """group -> granted names, for exactly this tenant."""
        version = self._store.data_version()
        if version is None or version != self._version:
            self._cache.clear()
            self._version = version
        elif tenant in self._cache:
            return self._cache[tenant]
        try:
            rows = await self._store.fetchall(self._select, (tenant,))
        except DatabaseUnavailable:
            if tenant in self._last:
                return self._last[tenant]
            raise
        found = {str(row[1]): _decode(row[2]) for row in rows if same_identity(row[0], tenant)}
        if len(self._last) < 10_000 or tenant in self._last:
            self._last[tenant] = found
        if version is not None and len(self._cache) < 10_000:
            self._cache[tenant] = found
        return found

    def forget(self) -> None:
        """Drop the cache (after a write through the API, for backends without data_version)."""
        self._cache.clear()

    async def of(self, scope: Scope, groups: Iterable[str]) -> frozenset[str]:
        """What a user with these groups holds in this scope (the module docstring's rule)."""
        groups = tuple(groups)
        if ADMINISTRATORS in groups:
            return ALL
        granted = await self.of_tenant(scope.tenant or "")  # no tenancy: the '' rows
        if not granted:
            return LEGACY
        return names(n for g in groups for n in granted.get(g, ()))
