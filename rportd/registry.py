"""Connected and recently lost clients, keyed by (tenant, client id), persisted across restarts.

Every read takes a `Scope` (tenancy.py): there is no call that lists clients without one.
Another tenant's client is indistinguishable from a missing one.

Writes persist, then publish: the row is written first and memory changes only once the write
succeeded, so a failed write leaves memory exactly as it was. Each (tenant, id) has its own lock,
held across that client's write; no lock spans other clients' I/O. Liveness is the exception:
a disconnect is published even when its write fails (who is connected now must not depend on the
database; `load()` marks rows left "connected" as lost after a restart).
"""

from __future__ import annotations

import asyncio
import builtins
import dataclasses
import json
import logging
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from .errors import BadRequest, Conflict, NotFound, StoreError
from .store import Store
from .tenancy import Scope
from .tunnel_spec import Remote

__all__ = ["ClientRecord", "Registry", "ClientSession", "IdTaken", "AlreadyConnected",
           "utcnow_iso", "MAX_ID_LENGTH"]

MAX_ID_LENGTH = 150  # clients.id is VARCHAR(150) in migrations/mysql/0002_client_registry

log = logging.getLogger("rportd.registry")

# What an agent reports, in rport's client JSON order, with the value a client that did not
# report it shows (the 2021 client sends none of the fields from os_full_name to session_id).
_DETAIL_FIELDS: tuple[tuple[str, Any], ...] = (
    ("name", ""), ("os", ""), ("os_arch", ""), ("os_family", ""), ("os_kernel", ""),
    ("os_full_name", ""), ("os_version", ""), ("os_virtualization_system", ""),
    ("os_virtualization_role", ""), ("cpu_family", ""), ("cpu_model", ""), ("cpu_model_name", ""),
    ("cpu_vendor", ""), ("num_cpus", 0), ("mem_total", 0), ("timezone", ""), ("hostname", ""),
    ("ipv4", []), ("ipv6", []), ("tags", []), ("labels", {}), ("version", ""), ("address", ""),
    ("session_id", ""), ("updates_status", None), ("client_configuration", None))


TunnelEdit = Callable[[list[dict[str, Any]]], list[dict[str, Any]]]


def utcnow_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class ClientSession(Protocol):
    """A live agent connection as the registry and the API see it (agent_port/session.py
    implements it); the API reaches agents only through this."""

    def close(self) -> None: ...

    async def wait_closed(self) -> None:
        """Return once the session has released everything it held (its tunnels' ports)."""
        ...

    async def alive(self) -> bool:
        """Whether the agent still answers (a want-reply request, bounded in time)."""
        ...

    async def open_tunnel(self, remote: Remote, *, check: bool) -> dict[str, Any]:
        """Listen for `remote` and forward to the agent; the tunnel's JSON. Raises RportdError."""
        ...

    async def remove_tunnel(self, tunnel_id: str) -> bool:
        """Close a live tunnel; False when the client has no such tunnel."""
        ...

    async def run_job(self, job: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Send `job` in run_cmd; the agent's success reply ({"Pid", "StartedAt"}). Raises
        jobs.CommandRefused with the agent's failure text, jobs.NoAnswer after `timeout`, or
        BadRequest when the connection is closing."""
        ...

    def supports_scripts(self) -> bool:
        """Whether the agent's generation understands `is_script` (the 2021 client would run
        the script text as a command line)."""
        ...


class IdTaken(Conflict):
    """A client id already belongs to another credential (or is connected through one)."""


class AlreadyConnected(Conflict):
    """The id is connected through a live session. The text carries rport's
    `client is already connected:`, on which the real client backs off and retries."""


@dataclass
class ClientRecord:
    tenant: str
    id: str
    client_auth_id: str
    details: dict[str, Any]
    tunnels: list[dict[str, Any]] = field(default_factory=list)
    disconnected_at: str | None = None
    session: ClientSession | None = field(default=None, repr=False)
    next_tunnel_id: int = 1  # tunnel ids are never reused for a client

    @property
    def connected(self) -> bool:
        return self.session is not None

    def to_json(self, with_tenant: bool = True) -> dict[str, Any]:
        """rport's client JSON (plus `tenant` under multi-tenancy)."""
        body: dict[str, Any] = {"id": self.id}
        for name, missing in _DETAIL_FIELDS:
            body[name] = self.details.get(name, type(missing)() if missing is not None else None)
        body.update(tunnels=list(self.tunnels), disconnected_at=self.disconnected_at,
                    connection_state="connected" if self.connected else "disconnected",
                    client_auth_id=self.client_auth_id)
        if with_tenant:
            body["tenant"] = self.tenant
        return body


def _next_tunnel_id(stored: Any, tunnels: list[dict[str, Any]]) -> int:
    """At least the stored counter and above every id in use (rows from before 0004)."""
    used = [int(t["id"]) for t in tunnels if str(t.get("id", "")).isdigit()]
    return max([int(stored or 1), *[u + 1 for u in used]])


class Registry:
    """The one owner of client records. Writes go through to the store before they are visible."""

    def __init__(self, store: Store, keep_lost_clients: float):
        self._store = store
        self._keep = keep_lost_clients
        # tenant -> client id -> record: a tenant's listing never walks other tenants' clients.
        self._by_tenant: dict[str, dict[str, ClientRecord]] = {}
        # Bumped on every change, per tenant and overall: lets readers cache what they derive.
        self._versions: dict[str, int] = {}
        self._version = 0
        # One lock per (tenant, id), dropped when nobody holds or waits for it.
        self._locks: weakref.WeakValueDictionary[tuple[str, str], asyncio.Lock] = (
            weakref.WeakValueDictionary())

    def _lock(self, tenant: str, client_id: str) -> asyncio.Lock:
        lock = self._locks.get((tenant, client_id))
        if lock is None:
            lock = self._locks[(tenant, client_id)] = asyncio.Lock()
        return lock

    # ------------------------------------------------------------------ persistence
    async def load(self) -> None:
        """Restore records after a restart; every client starts disconnected."""
        now = utcnow_iso()
        rows = await self._store.fetchall(
            "SELECT tenant, id, client_auth_id, details, tunnels, disconnected_at, "
            "next_tunnel_id FROM clients")
        for tenant, client_id, auth_id, details, tunnels, disconnected_at, next_id in rows:
            kept = json.loads(tunnels)
            record = ClientRecord(str(tenant), str(client_id), str(auth_id), json.loads(details),
                                  kept, disconnected_at or now,
                                  next_tunnel_id=_next_tunnel_id(next_id, kept))
            self._by_tenant.setdefault(record.tenant, {})[record.id] = record
        await self._store.execute("UPDATE clients SET disconnected_at = ? "
                                  "WHERE disconnected_at IS NULL", (now,))
        await self.expire()

    def _changed(self, tenant: str) -> None:
        self._versions[tenant] = self._versions.get(tenant, 0) + 1
        self._version += 1

    def version(self, scope: Scope) -> int:
        """Changes whenever anything the scope can see changes."""
        return self._version if scope.tenant is None else self._versions.get(scope.tenant, 0)

    async def _write(self, record: ClientRecord) -> None:
        """Persist `record` (a candidate: nothing in memory changes here)."""
        params = (record.client_auth_id, json.dumps(record.details), json.dumps(record.tunnels),
                  record.disconnected_at, record.next_tunnel_id, record.tenant, record.id)
        updated = await self._store.execute(
            "UPDATE clients SET client_auth_id = ?, details = ?, tunnels = ?, disconnected_at = ?, "
            "next_tunnel_id = ? WHERE tenant = ? AND id = ?", params)
        if not updated:
            await self._store.execute(
                "INSERT INTO clients (client_auth_id, details, tunnels, disconnected_at, "
                "next_tunnel_id, tenant, id) VALUES (?, ?, ?, ?, ?, ?, ?)", params)

    async def _commit(self, record: ClientRecord, **changes: Any) -> None:
        """Persist `record` with `changes`, then apply them to the live record."""
        await self._write(dataclasses.replace(record, **changes))
        for name, value in changes.items():
            setattr(record, name, value)
        self._changed(record.tenant)

    async def set_tunnels(self, record: ClientRecord, edit: TunnelEdit,
                          next_tunnel_id: int | None = None) -> None:
        """Persist `edit(current tunnels)` (and the id counter, which only grows); memory
        follows a good write. The edit runs under the client's lock: concurrent edits compose."""
        async with self._lock(record.tenant, record.id):
            counter = max(next_tunnel_id or 1, record.next_tunnel_id)
            await self._commit(record, tunnels=edit(list(record.tunnels)), next_tunnel_id=counter)

    async def update_details(self, record: ClientRecord, changes: dict[str, Any]) -> None:
        """Persist what a registered agent reports later (its updates_status), then publish."""
        async with self._lock(record.tenant, record.id):
            await self._commit(record, details={**record.details, **changes})

    async def forget_tunnel(self, record: ClientRecord, tunnel_id: str) -> bool:
        """Drop a disconnected client's tunnel so it is not re-established on reconnect."""
        if not any(t.get("id") == tunnel_id for t in record.tunnels):
            return False
        await self.set_tunnels(record, lambda current: [t for t in current
                                                        if t.get("id") != tunnel_id])
        return True

    # ------------------------------------------------------------------ agent side
    async def connect(self, tenant: str, client_id: str, auth_id: str, details: dict[str, Any],
                      session: ClientSession, multiuse_creds: bool) -> ClientRecord:
        """Register a live session. The id belongs to the credential that first registered it in
        this tenant. While its session answers, a second agent with the same id is refused
        (AlreadyConnected); a session that no longer answers is closed and replaced.
        Raises StoreError with memory unchanged when the write fails."""
        async with self._lock(tenant, client_id):
            record = self._by_tenant.get(tenant, {}).get(client_id)
            if record is not None and record.client_auth_id != auth_id:
                raise IdTaken(f'client id "{client_id}" is already in use')
            if not multiuse_creds:
                self._check_single_use(tenant, client_id, auth_id)
            stale = await self._stale_session(record, session)
            if record is None:
                record = ClientRecord(tenant, client_id, auth_id, details)
                await self._write(dataclasses.replace(record, session=session))
                self._by_tenant.setdefault(tenant, {})[client_id] = record
                record.session = session
                self._changed(tenant)
            else:
                await self._commit(record, details=details, session=session, disconnected_at=None)
        if stale is not None:  # outside the lock: its cleanup records its own disconnect
            await _close_and_wait(stale)
        return record

    async def _stale_session(self, record: ClientRecord | None,
                             session: ClientSession) -> ClientSession | None:
        """The record's previous session when it no longer answers; AlreadyConnected when it
        does. Asked under the id's lock, so two newcomers never both replace it."""
        old = record.session if record is not None else None
        if old is None or old is session:
            return None
        if await old.alive():
            assert record is not None
            raise AlreadyConnected(f'client is already connected: "{record.id}"')
        log.warning("client %s reconnected; its previous connection did not answer and is "
                    "closed", record.id if record else "")
        return old

    def _check_single_use(self, tenant: str, client_id: str, auth_id: str) -> None:
        for other in self._all():
            if (other.client_auth_id == auth_id and other.connected
                    and (other.tenant, other.id) != (tenant, client_id)):
                raise IdTaken(f'client auth ID is already in use: "{auth_id}"')

    async def disconnect(self, record: ClientRecord, session: ClientSession) -> None:
        """Record that `session` ended. Published even when the write fails (logged): liveness
        never waits on the database."""
        async with self._lock(record.tenant, record.id):
            if record.session is not session:
                return  # a newer session already replaced this one
            now = utcnow_iso()
            try:
                await self._commit(record, session=None, disconnected_at=now)
            except StoreError as exc:
                log.error("client %s: disconnect not persisted: %s", record.id, exc)
                record.session, record.disconnected_at = None, now
                self._changed(record.tenant)

    async def disconnect_all(self) -> None:
        """Shutdown: close every live session and record it as disconnected now."""
        for record in list(self._all()):
            session = record.session
            if session is not None:
                session.close()
                await self.disconnect(record, session)

    # ------------------------------------------------------------------ scoped reads
    def list(self, scope: Scope) -> list[ClientRecord]:
        if scope.sees_nothing:
            return []
        if scope.tenant is None:
            return list(self._all())
        return list(self._by_tenant.get(scope.tenant, {}).values())

    def get(self, scope: Scope, client_id: str) -> ClientRecord:
        """The client, or NotFound — the same for another tenant's client as for a missing one."""
        # Without multi-tenancy every client is registered under tenant "".
        tenant = "" if scope.tenant is None else scope.tenant
        record = None if scope.sees_nothing else self._by_tenant.get(tenant, {}).get(client_id)
        if record is not None:
            return record
        # No id in the text: the answer must be byte-identical for every missing id (rule 5).
        raise NotFound("client not found", code="ERR_CODE_CLIENT_NOT_FOUND")

    async def delete(self, scope: Scope, client_id: str) -> None:
        record = self.get(scope, client_id)
        async with self._lock(record.tenant, record.id):
            if record.connected:
                raise BadRequest("client is connected; only disconnected clients can be deleted",
                                 code="ERR_CODE_CLIENT_CONNECTED")
            await self._forget(record)

    async def _forget(self, record: ClientRecord) -> None:
        """Delete the row, then drop the record (a failed DELETE keeps it listed)."""
        await self._store.execute("DELETE FROM clients WHERE tenant = ? AND id = ?",
                                  (record.tenant, record.id))
        clients = self._by_tenant.get(record.tenant, {})
        if clients.get(record.id) is record:
            del clients[record.id]
        self._changed(record.tenant)

    def evict_tenant(self, tenant: str) -> tuple[ClientSession, ...]:
        """Removing a tenant (tenant_admin.py): forget its clients in memory (the caller deletes
        the rows) and hand back the live sessions to close. Their disconnects write nothing:
        the records are no longer the registry's."""
        clients = self._by_tenant.pop(tenant, {})
        sessions: builtins.list[ClientSession] = []
        for record in clients.values():
            if record.session is not None:
                sessions.append(record.session)
                record.session = None
        if clients:
            self._changed(tenant)
        return tuple(sessions)

    def tenant_counts(self) -> dict[str, tuple[int, int, int]]:
        """For the operator only: (connected, disconnected, tunnels) per tenant, '' holding the
        orphaned clients. Counts, never records: no client of any tenant leaves through it."""
        counts = {}
        for tenant, clients in self._by_tenant.items():
            connected = sum(1 for r in clients.values() if r.connected)
            tunnels = sum(len(r.tunnels) for r in clients.values())
            counts[tenant] = (connected, len(clients) - connected, tunnels)
        return counts

    def sessions_of(self, tenant: str) -> builtins.list[ClientSession]:
        """The live sessions of `tenant` (the operator suspending it closes them)."""
        return [r.session for r in self._by_tenant.get(tenant, {}).values()
                if r.session is not None]

    def connected_count(self, tenant: str, but: str = "") -> int:
        """Connected clients of `tenant`, not counting client id `but` (the client quota)."""
        return sum(1 for r in self._by_tenant.get(tenant, {}).values()
                   if r.connected and r.id != but)

    def counts(self, scope: Scope) -> tuple[int, int]:
        clients = self.list(scope)
        connected = sum(1 for r in clients if r.connected)
        return connected, len(clients) - connected

    def _all(self) -> Iterator[ClientRecord]:
        for clients in self._by_tenant.values():
            yield from clients.values()

    # ------------------------------------------------------------------ housekeeping
    async def expire(self) -> None:
        """Forget clients disconnected longer than keep_lost_clients (0 = forget at once).
        Never raises on a store error: it is logged and the client is tried again next time."""
        cutoff = time.time() - self._keep
        for record in list(self._all()):
            if _lost_before(record, cutoff):
                await self._expire_one(record, cutoff)

    async def _expire_one(self, record: ClientRecord, cutoff: float) -> None:
        async with self._lock(record.tenant, record.id):
            if not _lost_before(record, cutoff):
                return  # reconnected while we waited for the lock
            try:
                await self._forget(record)
            except StoreError as exc:
                log.error("client %s: not expired, the store failed: %s", record.id, exc)


async def _close_and_wait(session: ClientSession, seconds: float = 10.0) -> None:
    """Close a replaced session and give it time to release its tunnels' ports, which its
    successor is about to listen on."""
    session.close()
    try:
        await asyncio.wait_for(session.wait_closed(), seconds)
    except TimeoutError:
        log.warning("a replaced session took more than %ss to close", seconds)


def _lost_before(record: ClientRecord, cutoff: float) -> bool:
    if record.disconnected_at is None or record.connected:
        return False
    lost = datetime.fromisoformat(record.disconnected_at.replace("Z", "+00:00"))
    return lost.timestamp() <= cutoff
