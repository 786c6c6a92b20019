"""The registry over a real SQLite file whose writes fail for real (the clients table renamed away
by another connection): memory never runs ahead of the store, and expiry survives errors."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from rportd.config import DatabaseConfig
from rportd.errors import StoreError
from rportd.registry import Registry
from rportd.store import open_store
from rportd.store.base import Store
from rportd.store.migrate import migrate_up
from rportd.tenancy import Scope
from rportd.tunnel_spec import Remote

EVERYONE = Scope(tenant=None)


class Session:
    """The smallest real ClientSession: it answers liveness checks as told."""

    def __init__(self, answers: bool = True):
        self.answers = answers
        self.closed = False

    def close(self) -> None:
        self.closed = True

    async def wait_closed(self) -> None:
        return None

    async def alive(self) -> bool:
        return self.answers and not self.closed

    async def open_tunnel(self, remote: Remote, *, check: bool) -> dict[str, Any]:
        raise NotImplementedError

    async def remove_tunnel(self, tunnel_id: str) -> bool:
        return False


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await open_store_at(tmp_path / "rportd.db")
    await migrate_up(opened)
    yield opened
    await opened.close()


async def open_store_at(path: Path) -> Store:
    return await open_store(DatabaseConfig("sqlite", "", "", "", str(path)))


def break_table(db: Path) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute('ALTER TABLE "clients" RENAME TO "clients_away"')


def mend_table(db: Path) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute('ALTER TABLE "clients_away" RENAME TO "clients"')


async def test_a_failed_registration_write_leaves_memory_as_it_was(
        store: Store, tmp_path: Path) -> None:
    registry = Registry(store, keep_lost_clients=3600)
    break_table(tmp_path / "rportd.db")
    with pytest.raises(StoreError):
        await registry.connect("", "c1", "auth", {}, Session(), multiuse_creds=False)
    assert registry.list(EVERYONE) == []
    mend_table(tmp_path / "rportd.db")
    record = await registry.connect("", "c1", "auth", {}, Session(), multiuse_creds=False)
    assert record.connected and registry.list(EVERYONE) == [record]


async def test_a_store_error_during_expiry_does_not_stop_later_expiry(
        store: Store, tmp_path: Path) -> None:
    registry = Registry(store, keep_lost_clients=0)
    session = Session()
    record = await registry.connect("", "lost", "auth", {}, session, multiuse_creds=False)
    await registry.disconnect(record, session)
    break_table(tmp_path / "rportd.db")
    await registry.expire()  # logs the error instead of raising it
    assert [r.id for r in registry.list(EVERYONE)] == ["lost"], "kept until the row is gone"
    mend_table(tmp_path / "rportd.db")
    await registry.expire()
    assert registry.list(EVERYONE) == []
    assert await store.fetchall("SELECT id FROM clients") == []


async def test_a_disconnect_is_published_even_when_its_write_fails(
        store: Store, tmp_path: Path) -> None:
    registry = Registry(store, keep_lost_clients=3600)
    session = Session()
    record = await registry.connect("", "c1", "auth", {}, session, multiuse_creds=False)
    break_table(tmp_path / "rportd.db")
    await registry.disconnect(record, session)
    assert not record.connected, "who is connected must not depend on the database"


async def test_a_live_holder_keeps_its_id_and_a_silent_one_is_replaced(store: Store) -> None:
    registry = Registry(store, keep_lost_clients=3600)
    first = Session()
    await registry.connect("", "twin", "auth", {}, first, multiuse_creds=False)
    with pytest.raises(Exception, match="client is already connected: \"twin\""):
        await registry.connect("", "twin", "auth", {}, Session(), multiuse_creds=False)
    first.answers = False
    newcomer = Session()
    record = await registry.connect("", "twin", "auth", {}, newcomer, multiuse_creds=False)
    assert record.session is newcomer and first.closed
