"""The quota checks on their own, against real databases: `hold` (what the commands code calls
around a running command) and `check_rows` (inside an inserting transaction), under concurrency."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from rportd import quotas as quotas_module
from rportd.config import build_config
from rportd.quotas import QuotaExceeded, QuotaService
from rportd.store import Store, open_store
from rportd.store.migrate import migrate_up


def _config(database: dict[str, object], tmp: Path) -> object:
    return build_config({"server": {"allow_root": True, "data_dir": str(tmp),
                                    "auth_table": "clients_auth", "multi_tenancy": True},
                         "api": {"auth_user_table": "users", "auth_group_table": "groups"},
                         "database": database}, environ={})


async def _store(database: dict[str, object], tmp: Path) -> tuple[Store, QuotaService]:
    config = _config(database, tmp)
    store = await open_store(config.database)  # type: ignore[attr-defined]
    await migrate_up(store)
    await store.execute("INSERT INTO tenants (name, created_at, status, quotas) VALUES "
                        "(?, ?, 'active', ?)", ("J", "2026-01-01T00:00:00Z",
                                                json.dumps({"commands": 2, "credentials": 3})))
    return store, QuotaService(config, store)  # type: ignore[arg-type]


@pytest.fixture(params=["sqlite", pytest.param("mysql", marks=pytest.mark.mysql)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, object]:
    if request.param == "sqlite":
        return {"db_type": "sqlite", "db_name": str(tmp_path / "q.db")}
    return request.getfixturevalue("mysql_database_section")  # type: ignore[no-any-return]


def test_hold_lets_exactly_the_quota_run_at_once(database: dict[str, object],
                                                 tmp_path: Path) -> None:
    async def scenario() -> tuple[int, int, int]:
        store, quotas = await _store(database, tmp_path)
        running, most, refused = 0, 0, 0
        release = asyncio.Event()

        async def command() -> None:
            nonlocal running, most, refused
            try:
                async with quotas.hold("J", "commands"):
                    running += 1
                    most = max(most, running)
                    await release.wait()
                    running -= 1
            except QuotaExceeded as exc:
                assert (exc.status, exc.code, exc.limit) == (403, "ERR_CODE_QUOTA_EXCEEDED", 2)
                refused += 1

        tasks = [asyncio.create_task(command()) for _ in range(5)]
        await asyncio.sleep(0.2)
        release.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 10)
        after = quotas.held("J", "commands")
        async with quotas.hold("J", "commands", n=2):  # the places came back
            pass
        await store.close()
        return most, refused, after

    assert asyncio.run(scenario()) == (2, 3, 0)


def test_hold_counts_what_is_in_use_and_ignores_unlimited_tenants(
        database: dict[str, object], tmp_path: Path) -> None:
    async def scenario() -> None:
        store, quotas = await _store(database, tmp_path)
        with pytest.raises(QuotaExceeded):
            async with quotas.hold("J", "commands", in_use=lambda: 2):
                pass
        for tenant in ("j", "", "unknown"):  # `j` is not `J`; no tenant; no record
            async with quotas.hold(tenant, "commands", n=100):
                pass
        with pytest.raises(ValueError):
            async with quotas.hold("J", "disk"):
                pass
        await store.close()

    asyncio.run(scenario())


def test_check_rows_serialises_inserts_racing_at_the_quota(database: dict[str, object],
                                                          tmp_path: Path) -> None:
    async def scenario() -> list[str]:
        store, quotas = await _store(database, tmp_path)
        await store.execute("INSERT INTO clients_auth (id, password, tenant) VALUES "
                            "('c0', 'p', 'J'), ('c1', 'p', 'J'), ('x0', 'p', 'j')")

        async def insert(index: int) -> str:
            try:
                async with store.transaction() as tx:
                    await quotas.check_rows(tx, "J", "credentials")
                    await asyncio.sleep(0.05)  # a slow insert: the others must wait
                    await tx.execute("INSERT INTO clients_auth (id, password, tenant) "
                                     "VALUES (?, 'p', 'J')", (f"new{index}",))
                return "ok"
            except QuotaExceeded:
                return "over"

        results = await asyncio.gather(*(insert(i) for i in range(4)))
        rows = await store.fetchall("SELECT COUNT(*) FROM clients_auth WHERE tenant = 'J' "
                                    "COLLATE " + ("utf8mb4_bin" if store.dialect == "mysql"
                                                  else "BINARY"))
        await store.close()
        assert rows[0][0] == 3
        return sorted(results)

    assert asyncio.run(scenario()) == ["ok", "over", "over", "over"]


def test_a_failing_database_keeps_the_last_quotas_read(database: dict[str, object],
                                                       tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Every read goes to the database (cache off); when it fails, the last answer holds, and a
    tenant never read is not limited (the writes that follow need the database anyway)."""
    monkeypatch.setattr(quotas_module, "CACHE_SECONDS", 0.0)

    async def scenario() -> None:
        store, quotas = await _store(database, tmp_path)
        assert (await quotas.quotas("J"))["commands"] == 2
        await store.execute("DROP TABLE tenants")  # every read of it fails from here
        with pytest.raises(QuotaExceeded):
            async with quotas.hold("J", "commands", n=3):
                pass
        async with quotas.hold("K", "commands", n=3):
            pass
        await store.close()

    asyncio.run(scenario())
