"""Export a tenant from a Store, import an archive into one, delete a moved tenant.

An import is one database transaction: every row is classified (new, already there, conflict)
and new rows are written inside it; any conflict, a dry run or a kill rolls it all back. Rows
already there byte for byte are left alone, so the same import twice changes nothing.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from passlib.hash import bcrypt as _bcrypt

from ..auth.passwords import bcrypt_input, hash_password, is_bcrypt
from ..config import Config
from ..errors import BadRequest, TransferRefused
from ..store import Store
from ..store.base import Transaction
from ..tunnel_spec import Remote
from .archive import Archive
from .places import Place, Record, resolve_places
from .tables import TABLES, TenantTable

__all__ = ["Plan", "export_tenant", "import_archive", "delete_tenant", "storage_tenant",
           "Progress", "PAUSE_ENV", "hash_plaintext_rows"]

Progress = Callable[[str], None]

# Test-only: pause this many seconds after the named kind was written (inside the
# transaction), so a test can kill the import at a known point. Never set in production.
PAUSE_ENV = "RPORTD_TEST_IMPORT_PAUSE_AFTER"


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def storage_tenant(config: Config, name: str) -> str:
    """The tenant value rows carry on this server: the name, or '' without multi-tenancy."""
    return name if config.server.multi_tenancy else ""


@dataclass
class Plan:
    """What an import does (or would do): counts per kind, and every conflict."""

    tenant: str
    new: dict[str, int] = field(default_factory=dict)
    same: dict[str, int] = field(default_factory=dict)
    conflicts: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"{kind} {self.new.get(kind, 0)} new/{self.same.get(kind, 0)} unchanged"
                 for kind in (t.kind for t in TABLES)
                 if self.new.get(kind) or self.same.get(kind)]
        total_new, total_same = sum(self.new.values()), sum(self.same.values())
        return (f"tenant {self.tenant!r}: {total_new} rows new, {total_same} unchanged"
                + (f" ({', '.join(parts)})" if parts else ""))


async def export_tenant(store: Store, config: Config, name: str,
                        progress: Progress = _stderr) -> Archive:
    """Every row of the tenant, read in one transaction (one consistent snapshot)."""
    places = await resolve_places(config, store)
    tenant = storage_tenant(config, name)
    archive = Archive(name)
    async with store.transaction() as tx:
        for spec in TABLES:
            rows = await places[spec.kind].read_tenant(tx, tenant)
            archive.rows[spec.kind] = rows
            progress(f"exported {spec.kind}: {len(rows)}")
    return archive


async def delete_tenant(store: Store, config: Config, name: str,
                        progress: Progress = _stderr) -> int:
    """Remove every row of the tenant (after a verified export), in one transaction."""
    places = await resolve_places(config, store)
    tenant = storage_tenant(config, name)
    total = 0
    async with store.transaction() as tx:
        for spec in reversed(TABLES):
            count = await places[spec.kind].delete_tenant(tx, tenant)
            total += count
            progress(f"deleted {spec.kind}: {count}")
    for place in places.values():
        place.finish()
    return total


def _value(value: Any) -> Any:
    return None if value is None else str(value)


def _same(spec: TenantTable, stored: Record, wanted: Record, columns: set[str]) -> bool:
    return all(_value(stored.get(c)) == _value(wanted.get(c)) for c in columns if c in wanted)


def _describe(spec: TenantTable, row: Record) -> str:
    return ", ".join(f"{k} {row.get(k)!r}" for k in spec.keys) or "the tenant's record"


class _Importer:
    def __init__(self, places: dict[str, Place], tenant: str, plan: Plan, progress: Progress,
                 plaintext: dict[str, str]):
        self.places, self.tenant, self.plan, self.progress = places, tenant, plan, progress
        self.plaintext = plaintext  # credentials hashed for this import: id -> plaintext
        self._matched: dict[tuple[str, str], int] = {}

    async def _exact(self, spec: TenantTable, owner: str, stored: Record, row: Record) -> bool:
        if owner != self.tenant or any(stored.get(k) != row.get(k) for k in spec.keys):
            return False
        if _same(spec, stored, row, set(row)):
            return True
        plain = self.plaintext.get(str(row.get("id"))) if spec.kind == "credentials" else None
        return (plain is not None and _same(spec, stored, row, set(row) - {"password"})
                and await asyncio.to_thread(_verifies, plain, stored.get("password")))

    def _conflict(self, spec: TenantTable, row: Record, owner: str, stored: Record) -> None:
        where = "another tenant" if owner != self.tenant else "this tenant, with other values"
        if spec.global_keys and owner != self.tenant:
            where = f"another tenant ({spec.kind} are unique across tenants)"
        if any(stored.get(k) != row.get(k) for k in spec.keys):
            where += f", as {_describe(spec, stored)} (the table's collation makes them equal)"
        self.plan.conflicts.append(f"{spec.kind}: {_describe(spec, row)} already exists in "
                                   f"{where} on the target ({self.places[spec.kind].label})")

    async def row(self, tx: Transaction, spec: TenantTable, row: Record) -> None:
        place = self.places[spec.kind]
        matches = await place.find(tx, self.tenant, row)
        exact = [m for m in matches if await self._exact(spec, m[0], m[1], row)]
        if len(exact) < len(matches):
            for owner, stored in (m for m in matches if m not in exact):
                self._conflict(spec, row, owner, stored)
            return
        # Identical rows count as a multiset (two equal audit entries are two entries): each
        # row of the archive is matched by at most one row already there.
        signature = (spec.kind, json.dumps(row, sort_keys=True, default=str))
        self._matched[signature] = self._matched.get(signature, 0) + 1
        if self._matched[signature] <= len(exact):
            self.plan.same[spec.kind] = self.plan.same.get(spec.kind, 0) + 1
            return
        if not self.plan.conflicts:  # after the first conflict only the list matters
            await place.insert(tx, self.tenant, row)
        self.plan.new[spec.kind] = self.plan.new.get(spec.kind, 0) + 1

    async def kind(self, tx: Transaction, spec: TenantTable, rows: list[Record]) -> None:
        place = self.places[spec.kind]
        dropped = sorted({c for r in rows for c in r} - place.columns)
        if rows and dropped:
            self.plan.notes.append(f"{spec.kind}: {place.label} has no column "
                                   f"{', '.join(dropped)}; those values are not imported")
        if rows:
            await place.preload(tx, self.tenant)
        for done, row in enumerate(rows, 1):
            if spec.kind == "clients":
                _check_client(row)
            await self.row(tx, spec, {k: v for k, v in row.items() if k in place.columns})
            if done % 1000 == 0:
                self.progress(f"importing {spec.kind}: {done}/{len(rows)}")
        self.progress(f"{spec.kind}: {self.plan.new.get(spec.kind, 0)} new, "
                      f"{self.plan.same.get(spec.kind, 0)} unchanged")
        await _test_pause(spec.kind, self.progress)


def _check_client(row: Record) -> None:
    """rportd reads these at start: a client row it could not load is refused here, not there."""
    try:
        details, tunnels = json.loads(row["details"]), json.loads(row["tunnels"])
        if not isinstance(details, dict) or not isinstance(tunnels, list):
            raise ValueError("details must be an object and tunnels a list")
        for tunnel in tunnels:
            Remote.from_json(tunnel)
    except (KeyError, TypeError, ValueError, BadRequest) as exc:
        detail = exc.detail if isinstance(exc, BadRequest) else str(exc)
        raise TransferRefused(f"client {row.get('id')!r} cannot be imported: {detail}; "
                              "nothing was changed") from None


async def _test_pause(kind: str, progress: Progress) -> None:
    wanted, _, seconds = os.environ.get(PAUSE_ENV, "").partition(":")
    if wanted == kind:
        progress(f"test pause after {kind}")
        await asyncio.sleep(float(seconds or 30))


async def hash_plaintext_rows(archive: Archive) -> dict[str, str]:
    """Credential passwords stored in clear become bcrypt hashes (off the event loop, before
    any transaction). Returns id -> the plaintext, to recognise them already imported."""
    plain: dict[str, str] = {}
    for row in archive.rows.get("credentials", []):
        password = str(row.get("password", ""))
        if password and not is_bcrypt(password):
            plain[str(row.get("id"))] = password
            row["password"] = await asyncio.to_thread(hash_password, password)
    return plain


def _verifies(password: str, stored: Any) -> bool:
    try:
        return is_bcrypt(str(stored)) and bool(_bcrypt.verify(bcrypt_input(password),
                                                              str(stored)))
    except ValueError:
        return False


def _lports(tunnels: Any) -> set[str]:
    try:
        parsed = json.loads(tunnels) if isinstance(tunnels, str) else []
    except ValueError:
        return set()
    return {str(t.get("lport")) for t in parsed if isinstance(t, dict) and t.get("lport")}


async def _port_clashes(tx: Transaction, store: Store, tenant: str,
                        clients: list[Record]) -> list[str]:
    """Tunnel ports the imported clients had that another client on the target already holds:
    they could not come back when the agent reconnects. (Operators only read this.)"""
    rows = await tx.fetchall(f"SELECT {store.quote('tenant')}, {store.quote('id')}, "
                             f"{store.quote('tunnels')} FROM {store.quote('clients')}")
    taken: dict[str, str] = {}
    for owner, client_id, tunnels in rows:
        for port in _lports(tunnels):
            taken[port] = f"{client_id!s} of tenant {owner!s}" if owner else str(client_id)
    clashes = []
    for client in clients:
        mine = f"{client.get('id')!s} of tenant {tenant}" if tenant else str(client.get("id"))
        for port in sorted(_lports(client.get("tunnels"))):
            if taken.get(port, mine) != mine:
                clashes.append(f"clients: tunnel port {port} of client {client.get('id')!r} is "
                               f"already a tunnel port of client {taken[port]} on the target; "
                               "free it there or change the tunnel at the source")
    return clashes


class _Rollback(Exception):
    """Raised inside the transaction to undo it (a dry run, or conflicts)."""


def _refuse_unplaceable(archive: Archive, places: dict[str, Place], plan: Plan) -> None:
    for spec in TABLES:
        place = places[spec.kind]
        if archive.rows.get(spec.kind) and not place.columns:
            plan.conflicts.append(f"{spec.kind}: {len(archive.rows[spec.kind])} rows, but "
                                  f"{place.label}")


async def import_archive(store: Store, config: Config, archive: Archive, *, name: str,
                         dry_run: bool = False, hash_plaintext: bool = False,
                         progress: Progress = _stderr) -> Plan:
    """Load the archive's rows into tenant `name`, all or nothing. Returns the plan (for a dry
    run: what would happen); raises TransferRefused listing every conflict."""
    plaintext = await hash_plaintext_rows(archive) if hash_plaintext else {}
    places = await resolve_places(config, store)
    tenant = storage_tenant(config, name)
    plan = Plan(name)
    _refuse_unplaceable(archive, places, plan)
    rows = _renamed(archive, name if config.server.multi_tenancy else None)
    importer = _Importer(places, tenant, plan, progress, plaintext)
    try:
        async with store.transaction() as tx:
            plan.conflicts += await _port_clashes(tx, store, tenant, rows.get("clients", []))
            for spec in TABLES:
                await importer.kind(tx, spec, rows.get(spec.kind, []))
            if plan.conflicts or dry_run:
                raise _Rollback
    except _Rollback:
        pass
    if plan.conflicts:
        raise TransferRefused(f"{len(plan.conflicts)} conflicts; nothing was changed",
                              plan.conflicts)
    if not dry_run:
        for place in places.values():
            place.finish()
    return plan


def _renamed(archive: Archive, name: str | None) -> dict[str, list[Record]]:
    """The rows to write: without tenancy there is no tenant record to keep."""
    rows = dict(archive.rows)
    if name is None:
        rows["tenants"] = []
    return rows
