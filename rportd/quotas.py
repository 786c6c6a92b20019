"""Quotas per tenant: clients (connected at once), credentials, users, tunnels and concurrent
commands, from the tenant's row in `tenants` (no row, or no number: unlimited).

Two ways to count, each race-free:
- rows in a table (credentials, users): `check_rows(tx, tenant, kind)` inside the transaction
  that inserts. It locks the tenant's row first (MySQL `FOR UPDATE`; SQLite transactions are
  `BEGIN IMMEDIATE`, one writer at a time), so two inserts racing at quota-1 are serialised and
  the second sees the first.
- things in memory (connected clients, tunnels, running commands): `async with hold(tenant,
  kind, in_use)` checks `in_use() + held + n <= quota` and holds n places until the block ends,
  with no await between the check and taking the places, so concurrent holders in this process
  cannot both pass. Hold across the creation (then the new thing is counted by `in_use`), or
  across the whole life of the thing when nothing else counts it (running commands).

Wiring (one QuotaService per process: `request.app[api.tenants.TENANT_SERVICES].quotas` in the
API, `AgentServices.quotas` on the agent port):
    # concurrent commands: hold one place per client for as long as the command runs
    async with quotas.hold(caller.scope.tenant, "commands", n=len(client_ids)):
        ...send the command, wait for every result (or its timeout)...
    # users: inside the transaction that inserts the user row
    async with store.transaction() as tx:
        await quotas.check_rows(tx, tenant, "users")
        await tx.execute("INSERT INTO users ...")

Over quota: QuotaExceeded, the API's 403 ERR_CODE_QUOTA_EXCEEDED; a suspended tenant gets
TenantSuspended (a QuotaExceeded, 403 ERR_CODE_TENANT_SUSPENDED) from every hold.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from .config import Config
from .errors import Forbidden, StoreError
from .store import Store
from .store.base import Transaction
from .tenants import QUOTA_KINDS, SUSPENDED, Tenant, TenantTables

__all__ = ["QuotaExceeded", "TenantSuspended", "QuotaService", "CACHE_SECONDS"]

log = logging.getLogger("rportd.quotas")
CACHE_SECONDS = 2.0  # quotas changed by SQL by hand are seen this late; API changes at once


class QuotaExceeded(Forbidden):
    code = "ERR_CODE_QUOTA_EXCEEDED"
    title = "Quota exceeded"

    def __init__(self, kind: str, limit: int):
        super().__init__(f"the tenant's {kind} quota ({limit}) is reached")
        self.kind = kind
        self.limit = limit


class TenantSuspended(QuotaExceeded):
    """The operator suspended the tenant: nothing new for it, as if every quota were 0."""

    code = "ERR_CODE_TENANT_SUSPENDED"
    title = "Tenant suspended"

    def __init__(self) -> None:
        Forbidden.__init__(self, "the tenant is suspended by the operator")
        self.kind, self.limit = "all", 0


class QuotaService:
    """One per process. Without multi_tenancy (or for the tenant '') nothing is limited."""

    def __init__(self, config: Config, store: Store, tables: TenantTables | None = None):
        self._enabled = config.server.multi_tenancy
        self.tables = tables or TenantTables(config, store)
        self._row_tables = {"credentials": config.server.auth_table,
                            "users": config.api.auth_user_table}
        self._cache: dict[str, tuple[float, Tenant | None]] = {}
        self._held: dict[tuple[str, str], int] = {}

    def _applies(self, tenant: str, kind: str) -> bool:
        if kind not in QUOTA_KINDS:
            raise ValueError(f"unknown quota kind {kind!r}")
        return self._enabled and bool(tenant)

    async def _record(self, tenant: str) -> Tenant | None:
        """The tenant's row, read at most every CACHE_SECONDS. While the database fails: the
        last one read, or none (no limits) if it was never read — the writes that follow need
        the database anyway and have their own retries; a quota read must not add a failure."""
        now = asyncio.get_running_loop().time()
        cached = self._cache.get(tenant)
        if cached is not None and now - cached[0] < CACHE_SECONDS:
            return cached[1]
        try:
            record = await self.tables.record(tenant)
        except StoreError as exc:
            log.warning("quotas of tenant %r not read: %s", tenant, exc)
            return cached[1] if cached is not None else None
        self._cache[tenant] = (now, record)
        return record

    async def quotas(self, tenant: str) -> dict[str, int]:
        record = await self._record(tenant)
        return dict(record.quotas) if record is not None else {}

    def suspended_now(self, tenant: str) -> bool | None:
        """The cached answer of `suspended`, without awaiting; None when it must be read."""
        if not self._enabled or not tenant:
            return False
        cached = self._cache.get(tenant)
        if cached is None or asyncio.get_running_loop().time() - cached[0] >= CACHE_SECONDS:
            return None
        return cached[1] is not None and cached[1].status == SUSPENDED

    async def suspended(self, tenant: str) -> bool:
        """Whether the operator suspended the tenant (its users and agents are refused)."""
        if not self._enabled or not tenant:
            return False
        record = await self._record(tenant)
        return record is not None and record.status == SUSPENDED

    def forget(self, tenant: str) -> None:
        """The tenant's quotas changed (or it was deleted): read them again next time."""
        self._cache.pop(tenant, None)

    def held(self, tenant: str, kind: str) -> int:
        return self._held.get((tenant, kind), 0)

    @asynccontextmanager
    async def hold(self, tenant: str, kind: str, in_use: Callable[[], int] = lambda: 0,
                   n: int = 1) -> AsyncIterator[None]:
        """Hold `n` places of `kind` in `tenant` for the block; QuotaExceeded when
        `in_use() + held + n` would pass the quota. `in_use` is called after the quota is
        read, right before the check."""
        if not self._applies(tenant, kind):
            yield
            return
        if await self.suspended(tenant):
            raise TenantSuspended()
        limit = (await self.quotas(tenant)).get(kind)
        key = (tenant, kind)
        if limit is not None and in_use() + self._held.get(key, 0) + n > limit:
            raise QuotaExceeded(kind, limit)
        self._held[key] = self._held.get(key, 0) + n
        try:
            yield
        finally:
            left = self._held[key] - n
            if left:
                self._held[key] = left
            else:
                del self._held[key]

    async def check_rows(self, tx: Transaction, tenant: str, kind: str) -> None:
        """Inside the inserting transaction: QuotaExceeded when the tenant's rows of `kind`
        ("credentials" or "users") already fill its quota. Locks the tenant's row."""
        if not self._applies(tenant, kind):
            return
        table = self._row_tables.get(kind)
        if not table:
            raise ValueError(f"{kind!r} is not counted in a table")
        limit = (await self.tables.locked_quotas(tx, tenant)).get(kind)
        if limit is not None and await self.tables.count_rows(table, tenant, tx) >= limit:
            raise QuotaExceeded(kind, limit)
