"""Migration runner: applies migrations/<dialect>/NNNN_name.up.sql in order, records versions."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import StoreError
from .base import Store

__all__ = ["Migration", "MIGRATIONS_DIR", "available", "applied_versions", "migrate_up",
           "migrate_down", "status"]

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.up\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    up: Path
    down: Path


def available(dialect: str) -> list[Migration]:
    """The migrations shipped for a dialect, in version order."""
    found = []
    for path in sorted((MIGRATIONS_DIR / dialect).glob("*.up.sql")):
        match = _FILE.match(path.name)
        if match:
            down = path.with_name(path.name.replace(".up.sql", ".down.sql"))
            found.append(Migration(int(match.group(1)), match.group(2), path, down))
    return found


async def _ensure_table(store: Store) -> None:
    if await store.table_columns("schema_migrations"):
        return
    table = store.quote("schema_migrations")
    await store.execute(
        f"CREATE TABLE {table} (version INTEGER NOT NULL PRIMARY KEY, "
        "name VARCHAR(100) NOT NULL, applied_at BIGINT NOT NULL)")


async def applied_versions(store: Store) -> set[int]:
    await _ensure_table(store)
    rows = await store.fetchall(f"SELECT version FROM {store.quote('schema_migrations')}")
    return {int(row[0]) for row in rows}


async def _run_script(store: Store, path: Path, bookkeeping: str) -> None:
    """Run one file plus its schema_migrations row: one transaction on SQLite (MySQL commits DDL
    implicitly, so there the row follows the last statement)."""
    script = path.read_text(encoding="utf-8")
    try:
        await store.executescript(script + "\n" + bookkeeping + ";\n")
    except StoreError as exc:
        raise StoreError(f"migration {path.name} failed: {exc}") from exc


async def migrate_up(store: Store) -> list[Migration]:
    """Apply every pending migration; returns what was applied. Idempotent."""
    done = await applied_versions(store)
    applied = []
    for migration in available(store.dialect):
        if migration.version in done:
            continue
        # version and name are digits and [a-z0-9_] (checked by _FILE), safe to inline
        record = (f"INSERT INTO {store.quote('schema_migrations')} (version, name, applied_at) "
                  f"VALUES ({migration.version}, '{migration.name}', {int(time.time())})")
        await _run_script(store, migration.up, record)
        applied.append(migration)
    return applied


async def migrate_down(store: Store, steps: int) -> list[Migration]:
    """Revert the newest `steps` applied migrations, newest first."""
    done = await applied_versions(store)
    reverted: list[Migration] = []
    for migration in reversed(available(store.dialect)):
        if len(reverted) == steps:
            break
        if migration.version not in done:
            continue
        record = (f"DELETE FROM {store.quote('schema_migrations')} "
                  f"WHERE version = {migration.version}")
        await _run_script(store, migration.down, record)
        reverted.append(migration)
    return reverted


async def status(store: Store) -> list[tuple[Migration, bool]]:
    done = await applied_versions(store)
    return [(m, m.version in done) for m in available(store.dialect)]
