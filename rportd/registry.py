"""Connected and recently lost clients, keyed by (tenant, client id), persisted across restarts.

Every read takes a `Scope` (tenancy.py): there is no call that lists clients without one.
Another tenant's client is indistinguishable from a missing one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from .errors import BadRequest, Conflict, NotFound
from .store import Store
from .tenancy import Scope
from .tunnel_spec import Remote

__all__ = ["ClientRecord", "Registry", "ClientSession", "IdTaken", "utcnow_iso"]

log = logging.getLogger("rportd.registry")

_DETAIL_FIELDS = ("name", "os", "os_arch", "os_family", "os_kernel", "hostname", "ipv4", "ipv6",
                  "tags", "version", "address")


def utcnow_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class ClientSession(Protocol):
    """A live agent connection as the registry and the API see it (agent_port/session.py
    implements it); the API reaches agents only through this."""

    def close(self) -> None: ...

    async def open_tunnel(self, remote: Remote, *, check: bool) -> dict[str, Any]:
        """Listen for `remote` and forward to the agent; the tunnel's JSON. Raises RportdError."""
        ...

    async def remove_tunnel(self, tunnel_id: str) -> bool:
        """Close a live tunnel; False when the client has no such tunnel."""
        ...


class IdTaken(Conflict):
    """A client id already belongs to another credential (or is connected through one)."""


@dataclass
class ClientRecord:
    tenant: str
    id: str
    client_auth_id: str
    details: dict[str, Any]
    tunnels: list[dict[str, Any]] = field(default_factory=list)
    disconnected_at: str | None = None
    session: ClientSession | None = field(default=None, repr=False)

    @property
    def connected(self) -> bool:
        return self.session is not None

    def to_json(self, with_tenant: bool = True) -> dict[str, Any]:
        """rport's client JSON (plus `tenant` under multi-tenancy)."""
        body: dict[str, Any] = {"id": self.id}
        for name in _DETAIL_FIELDS:
            body[name] = self.details.get(name, [] if name in ("ipv4", "ipv6", "tags") else "")
        body.update(tunnels=list(self.tunnels), disconnected_at=self.disconnected_at,
                    connection_state="connected" if self.connected else "disconnected",
                    client_auth_id=self.client_auth_id)
        if with_tenant:
            body["tenant"] = self.tenant
        return body


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
        self._lock = asyncio.Lock()

    # ------------------------------------------------------------------ persistence
    async def load(self) -> None:
        """Restore records after a restart; every client starts disconnected."""
        now = utcnow_iso()
        rows = await self._store.fetchall(
            "SELECT tenant, id, client_auth_id, details, tunnels, disconnected_at FROM clients")
        for tenant, client_id, auth_id, details, tunnels, disconnected_at in rows:
            record = ClientRecord(str(tenant), str(client_id), str(auth_id), json.loads(details),
                                  json.loads(tunnels), disconnected_at or now)
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

    async def _save(self, record: ClientRecord) -> None:
        self._changed(record.tenant)  # the record was changed in memory before this call
        params = (record.client_auth_id, json.dumps(record.details), json.dumps(record.tunnels),
                  record.disconnected_at, record.tenant, record.id)
        updated = await self._store.execute(
            "UPDATE clients SET client_auth_id = ?, details = ?, tunnels = ?, disconnected_at = ? "
            "WHERE tenant = ? AND id = ?", params)
        if not updated:
            await self._store.execute(
                "INSERT INTO clients (client_auth_id, details, tunnels, disconnected_at, tenant, id) "
                "VALUES (?, ?, ?, ?, ?, ?)", params)

    async def save_tunnels(self, record: ClientRecord) -> None:
        await self._save(record)

    async def forget_tunnel(self, record: ClientRecord, tunnel_id: str) -> bool:
        """Drop a disconnected client's tunnel so it is not re-established on reconnect."""
        kept = [t for t in record.tunnels if t.get("id") != tunnel_id]
        if len(kept) == len(record.tunnels):
            return False
        record.tunnels = kept
        await self._save(record)
        return True

    # ------------------------------------------------------------------ agent side
    async def connect(self, tenant: str, client_id: str, auth_id: str, details: dict[str, Any],
                      session: ClientSession, multiuse_creds: bool) -> ClientRecord:
        """Register a live session. The id belongs to the credential that first registered it in
        this tenant; the same credential reconnecting replaces its stale session."""
        async with self._lock:
            record = self._by_tenant.get(tenant, {}).get(client_id)
            if record is not None and record.client_auth_id != auth_id:
                raise IdTaken(f'client id "{client_id}" is already in use')
            if not multiuse_creds:
                self._check_single_use(tenant, client_id, auth_id)
            if record is None:
                record = ClientRecord(tenant, client_id, auth_id, details)
                self._by_tenant.setdefault(tenant, {})[client_id] = record
            elif record.session is not None and record.session is not session:
                log.warning("client %s reconnected; closing its previous connection", client_id)
                record.session.close()
            record.details, record.session, record.disconnected_at = details, session, None
            await self._save(record)
            return record

    def _check_single_use(self, tenant: str, client_id: str, auth_id: str) -> None:
        for other in self._all():
            if (other.client_auth_id == auth_id and other.connected
                    and (other.tenant, other.id) != (tenant, client_id)):
                raise IdTaken(f'client auth ID is already in use: "{auth_id}"')

    async def disconnect(self, record: ClientRecord, session: ClientSession) -> None:
        if record.session is not session:
            return  # a newer session already replaced this one
        record.session = None
        record.disconnected_at = utcnow_iso()
        await self._save(record)

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
        if record.connected:
            raise BadRequest("client is connected; only disconnected clients can be deleted",
                             code="ERR_CODE_CLIENT_CONNECTED")
        await self._forget(record)

    async def _forget(self, record: ClientRecord) -> None:
        self._changed(record.tenant)
        self._by_tenant.get(record.tenant, {}).pop(record.id, None)
        await self._store.execute("DELETE FROM clients WHERE tenant = ? AND id = ?",
                                  (record.tenant, record.id))

    def counts(self, scope: Scope) -> tuple[int, int]:
        clients = self.list(scope)
        connected = sum(1 for r in clients if r.connected)
        return connected, len(clients) - connected

    def _all(self) -> Iterator[ClientRecord]:
        for clients in self._by_tenant.values():
            yield from clients.values()

    # ------------------------------------------------------------------ housekeeping
    async def expire(self) -> None:
        """Forget clients disconnected longer than keep_lost_clients (0 = forget at once)."""
        cutoff = time.time() - self._keep
        for record in list(self._all()):
            if record.disconnected_at is None:
                continue
            lost = datetime.fromisoformat(record.disconnected_at.replace("Z", "+00:00"))
            if lost.timestamp() <= cutoff:
                await self._forget(record)
