"""Client groups: rport's parameter patterns, who belongs, and the groups of each tenant.

A group is an id, a description and `params`: for each of rport's client properties a list of
patterns. A client belongs when every given property matches one of its patterns (rport's
rules: case-insensitive, `*` the only wildcard, anything else literal, a group without params
matches nobody). Members come from the registry with the caller's `Scope`, and the groups from
the `client_groups` table with the caller's tenant compared exactly: a group never sees another
tenant's clients, and another tenant's group answers exactly like a missing one.
"""

from __future__ import annotations

import asyncio
import json
import re
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import BadRequest, Conflict, Forbidden, NotFound
from .registry import ClientRecord, Registry
from .store import Store
from .tenancy import Scope, exact_equals, same_identity

__all__ = ["ClientGroup", "ClientGroups", "Member", "ClientGroupNotFound", "PARAM_NAMES",
           "clients_in_groups", "parse_group", "check_group_id", "pattern_matches", "belongs",
           "MAX_GROUPS_PER_TENANT", "MAX_ID_LENGTH", "MAX_PATTERNS_PER_PARAM",
           "MAX_PATTERN_LENGTH", "MAX_DESCRIPTION_LENGTH", "MAX_GROUP_IDS"]

# rport's client properties a group can select on, and where the registry keeps each.
PARAM_NAMES = ("client_id", "name", "os", "os_arch", "os_family", "os_kernel", "hostname",
               "ipv4", "ipv6", "tag", "version", "address", "client_auth_id")
_MULTI_VALUED = {"ipv4": "ipv4", "ipv6": "ipv6", "tag": "tags"}
_BODY_KEYS = ("id", "description", "params", "client_ids")

MAX_ID_LENGTH = 30  # rport's groupIDMaxLength
_ID = re.compile(r"[A-Za-z0-9_*-]{1,30}")  # rport's characters: letters, digits, _ - *
MAX_DESCRIPTION_LENGTH = 2000
MAX_PATTERNS_PER_PARAM = 100
MAX_PATTERN_LENGTH = 200
MAX_GROUPS_PER_TENANT = 500  # bounds the work of a listing: groups x clients x patterns
MAX_GROUP_IDS = 100  # group ids one resolution may name
_INLINE_WORK = 20_000  # groups x clients matched on the event loop; more goes to a thread

_INVALID_ID = "ERR_CODE_INVALID_CLIENT_GROUP_ID"
_INVALID_PARAMS = "ERR_CODE_INVALID_CLIENT_GROUP_PARAMS"
_INVALID_GROUP = "ERR_CODE_INVALID_CLIENT_GROUP"


class ClientGroupNotFound(NotFound):
    """No such group in the caller's tenant (also when another tenant has one by that id).
    `group_id` says which one, for the caller's own use; the text never names it."""

    code = "ERR_CODE_CLIENT_GROUP_NOT_FOUND"

    def __init__(self, group_id: str = ""):
        super().__init__("client group not found")
        self.group_id = group_id


# ---------------------------------------------------------------------- matching


def _fold(text: str) -> str:
    """Go's strings.ToLower: rune by rune, so no final-sigma context and U+0130 becomes 'i'
    (Python's str.lower() differs on exactly those)."""
    if text.isascii():
        return text.lower()
    return "".join("i" if ch == "\u0130" else ch.lower() for ch in text)


def _folded_matches(pattern: str, value: str) -> bool:
    """`pattern` and `value` already folded. Without `*` the whole value must be equal; with
    it, the pieces between stars must appear in order, the first at the start, the last at
    the end. `?`, `[` and every other character are literal, as in rport."""
    if "*" not in pattern:
        return pattern == value
    pieces = pattern.split("*")
    if not (value.startswith(pieces[0]) and value.endswith(pieces[-1])):
        return False
    if len(value) < len(pieces[0]) + len(pieces[-1]):
        return False  # the first and last pieces may not overlap
    at = len(pieces[0])
    for piece in pieces[1:-1]:
        found = value.find(piece, at, len(value) - len(pieces[-1]))
        if found < 0:
            return False
        at = found + len(piece)
    return True


def pattern_matches(pattern: str, value: str) -> bool:
    """One rport group pattern against one client value, ignoring case."""
    return _folded_matches(_fold(pattern), _fold(value))


def _values(record: ClientRecord, name: str) -> tuple[str, ...]:
    """The client's value(s) of one group parameter, as strings."""
    if name == "client_id":
        return (record.id,)
    if name == "client_auth_id":
        return (record.client_auth_id,)
    raw = record.details.get(_MULTI_VALUED.get(name, name))
    if name in _MULTI_VALUED:
        items = raw if isinstance(raw, list) else ([] if raw in (None, "") else [raw])
        return tuple(str(v) for v in items)
    return ("" if raw is None else str(raw),)


def _param_matches(patterns: Sequence[str] | None, values: Sequence[str]) -> bool:
    """rport's MatchesOneOf over folded text: an unset param matches everyone, an empty list
    only a client with no value at all (never one of the single-valued properties)."""
    if patterns is None:
        return True
    if not patterns and not values:
        return True
    return any(_folded_matches(p, v) for p in patterns for v in values)


@dataclass(frozen=True)
class Member:
    """A client as group matching sees it: its folded values, read once per request (plain
    data, so matching can run in a thread)."""

    id: str
    connected: bool
    values: dict[str, tuple[str, ...]]

    @classmethod
    def of(cls, record: ClientRecord) -> Member:
        return cls(record.id, record.connected,
                   {name: tuple(_fold(v) for v in _values(record, name)) for name in PARAM_NAMES})


# ---------------------------------------------------------------------- groups


@dataclass(frozen=True)
class ClientGroup:
    """A group as stored: `params` holds only the parameters given (None = unset)."""

    id: str
    description: str
    params: dict[str, tuple[str, ...]]

    def folded(self) -> dict[str, tuple[str, ...]]:
        return {name: tuple(_fold(p) for p in patterns) for name, patterns in self.params.items()}

    def params_json(self) -> dict[str, list[str] | None]:
        """rport's shape: every parameter, null when not set."""
        return {name: list(self.params[name]) if name in self.params else None
                for name in PARAM_NAMES}

    def to_json(self, members: Sequence[Member]) -> dict[str, Any]:
        """rport's group JSON; client_ids are its members, connected or not (as rport), and
        openrport's counts."""
        return {"id": self.id, "description": self.description, "params": self.params_json(),
                "client_ids": sorted(m.id for m in members), "num_clients": len(members),
                "num_clients_connected": sum(1 for m in members if m.connected)}


def _belongs_folded(params: dict[str, tuple[str, ...]], client: Member) -> bool:
    if not params:
        return False  # rport: a group without params has no members
    return all(_param_matches(params.get(name), client.values[name]) for name in PARAM_NAMES)


def belongs(group: ClientGroup, record: ClientRecord) -> bool:
    """Whether the client is a member of the group (rport's BelongsTo)."""
    return _belongs_folded(group.folded(), Member.of(record))


def _members(groups: Sequence[ClientGroup], clients: Sequence[Member]) -> list[list[Member]]:
    """Each group's members, in group order (pure: runs in a thread for big tenants)."""
    found = []
    for group in groups:
        params = group.folded()
        found.append([c for c in clients if _belongs_folded(params, c)])
    return found


# ---------------------------------------------------------------------- input


def check_group_id(value: Any) -> str:
    """rport's rule: 1-30 letters, digits, `_`, `-` or `*`. No blank, no case folding: `grp`
    and `GRP` are two groups, and `grp  ` is refused (it would meet `grp` in a pad-insensitive
    comparison)."""
    if not isinstance(value, str) or not value.strip():
        raise BadRequest("id must be a non-empty string", code=_INVALID_ID)
    if len(value) > MAX_ID_LENGTH:
        raise BadRequest(f"id must be at most {MAX_ID_LENGTH} characters, got {len(value)}",
                         code=_INVALID_ID)
    if not _ID.fullmatch(value):
        raise BadRequest("id may contain only letters, digits and _ - *", code=_INVALID_ID)
    return value


def _names(keys: Iterable[str]) -> str:
    shown = [repr(k[:40]) for k in sorted(keys)[:5]]
    return ", ".join(shown)


def _patterns(name: str, value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise BadRequest(f"params.{name} must be an array of strings or null",
                         code=_INVALID_PARAMS)
    if len(value) > MAX_PATTERNS_PER_PARAM:
        raise BadRequest(f"params.{name} has {len(value)} patterns; at most "
                         f"{MAX_PATTERNS_PER_PARAM}", code=_INVALID_PARAMS)
    if any(len(p) > MAX_PATTERN_LENGTH for p in value):
        raise BadRequest(f"params.{name}: a pattern is longer than {MAX_PATTERN_LENGTH} "
                         "characters", code=_INVALID_PARAMS)
    return tuple(value)


def _params(value: Any) -> dict[str, tuple[str, ...]]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest("params must be an object", code=_INVALID_PARAMS)
    unknown = set(value) - set(PARAM_NAMES)
    if unknown:
        raise BadRequest(f"unknown params {_names(unknown)}; use {', '.join(PARAM_NAMES)}",
                         code=_INVALID_PARAMS)
    parsed = {name: _patterns(name, value[name]) for name in PARAM_NAMES if name in value}
    return {name: patterns for name, patterns in parsed.items() if patterns is not None}


def _description(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BadRequest("description must be a string", code=_INVALID_GROUP)
    if len(value) > MAX_DESCRIPTION_LENGTH:
        raise BadRequest(f"description must be at most {MAX_DESCRIPTION_LENGTH} characters",
                         code=_INVALID_GROUP)
    return value


def parse_group(body: Any, path_id: str | None = None) -> ClientGroup:
    """A group from a POST/PUT body (rport's fields; `client_ids` is read-only and ignored).
    With `path_id` (PUT) the body's id must be the same. Raises BadRequest with its code."""
    if not isinstance(body, dict):
        raise BadRequest('the body must be a JSON object: {"id": ..., "description": ..., '
                         '"params": {...}}', code=_INVALID_GROUP)
    unknown = set(body) - set(_BODY_KEYS)
    if unknown:
        raise BadRequest(f"unknown fields {_names(unknown)}; use {', '.join(_BODY_KEYS)}",
                         code=_INVALID_GROUP)
    if body.get("client_ids") is not None and not isinstance(body["client_ids"], list):
        raise BadRequest("client_ids is read-only; send an array or leave it out",
                         code=_INVALID_GROUP)
    group_id = check_group_id(body.get("id"))
    if path_id is not None and path_id != group_id:
        raise BadRequest("the id in the path and the id in the body differ",
                         code="ERR_CODE_CLIENT_GROUP_ID_MISMATCH")
    return ClientGroup(group_id, _description(body.get("description")),
                       _params(body.get("params")))


def _stored_params(raw: Any) -> dict[str, tuple[str, ...]]:
    """Params as read back; a row edited by hand into something else selects nobody."""
    try:
        decoded = json.loads(raw) if isinstance(raw, str | bytes) else {}
    except ValueError:
        return {}
    if not isinstance(decoded, dict):
        return {}
    return {name: tuple(str(p) for p in value) for name, value in decoded.items()
            if name in PARAM_NAMES and isinstance(value, list)}


# ---------------------------------------------------------------------- the store


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
        """Each group's members among the scope's clients (connected or not)."""
        clients = [Member.of(r) for r in self._registry.list(scope)]
        if len(groups) * len(clients) <= _INLINE_WORK:
            return _members(groups, clients)
        return await asyncio.to_thread(_members, groups, clients)

    def clients_matching(self, scope: Scope, folded: Sequence[dict[str, tuple[str, ...]]],
                         connected_only: bool) -> list[ClientRecord]:
        """The scope's clients in any of the groups given by their folded params."""
        records = [r for r in self._registry.list(scope) if r.connected or not connected_only]
        chosen = [r for r in records if any(_belongs_folded(p, Member.of(r)) for p in folded)]
        return sorted(chosen, key=lambda r: r.id)

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
    return ClientGroup(str(group_id), str(description or ""), _stored_params(params))


# ---------------------------------------------------------------------- command targets


async def clients_in_groups(groups: ClientGroups, scope: Scope, group_ids: Sequence[str], *,
                            connected_only: bool = True) -> list[ClientRecord]:
    """The caller's clients that belong to any of `group_ids`, each once, sorted by id; only
    connected ones unless `connected_only=False` (rport's multi-client commands take the
    active members). BadRequest for a malformed or too long list; ClientGroupNotFound for the
    first id that is not a group of the caller's tenant (another tenant's id fails exactly
    like a missing one)."""
    if len(group_ids) > MAX_GROUP_IDS:
        raise BadRequest(f"at most {MAX_GROUP_IDS} group ids", code=_INVALID_ID)
    for group_id in group_ids:
        check_group_id(group_id)
    by_id = {group.id: group for group in await groups.find_all(scope)}
    wanted = []
    for group_id in dict.fromkeys(group_ids):
        if group_id not in by_id:
            raise ClientGroupNotFound(group_id)
        wanted.append(by_id[group_id].folded())
    return groups.clients_matching(scope, wanted, connected_only)
