"""Migrations on real SQLite files and the real MariaDB: indexes, constraints, round trips, CLI."""

from __future__ import annotations

import os
import sqlite3
import subprocess
from pathlib import Path

import pymysql
import pytest

from rportd.config import DatabaseConfig
from rportd.errors import StoreError
from rportd.store import open_store
from rportd.store.migrate import MIGRATIONS_DIR, available, migrate_down, migrate_up, status

from .conftest import MYSQL_HOST, MYSQL_PASSWORD, MYSQL_PORT, MYSQL_USER
from .helpers import run_rportd, write_config

EXPECTED_INDEXES = {
    ("clients_auth", "clients_auth_tenant"): ["tenant"],
    ("users", "users_username"): ["username"],
    ("users", "users_tenant"): ["tenant"],
    ("groups", "groups_username_group_tenant"): ["username", "group", "tenant"],
    ("clients", "clients_disconnected_at"): ["disconnected_at"],
    ("api_token_revocations", "api_token_revocations_expires"): ["expires"],
    ("multi_jobs", "multi_jobs_tenant_started_at"): ["tenant", "started_at"],
    ("jobs", "jobs_tenant_client_started_at"): ["tenant", "client_id", "started_at"],
    ("jobs", "jobs_tenant_multi_job_id"): ["tenant", "multi_job_id"],
    ("api_tokens", "api_tokens_tenant_username"): ["tenant", "username"],
    ("audit_log", "audit_log_tenant_at"): ["tenant", "at"],
}
UNIQUE = {"users_username", "groups_username_group_tenant"}


def sqlite_config(tmp_path: Path) -> DatabaseConfig:
    return DatabaseConfig("sqlite", "", "", "", str(tmp_path / "rportd.db"))


def mysql_config(name: str) -> DatabaseConfig:
    return DatabaseConfig("mysql", f"{MYSQL_HOST}:{MYSQL_PORT}", MYSQL_USER, MYSQL_PASSWORD, name)


@pytest.fixture(params=["sqlite", pytest.param("mysql", marks=pytest.mark.mysql)])
def db_config(request: pytest.FixtureRequest, tmp_path: Path) -> DatabaseConfig:
    if request.param == "sqlite":
        return sqlite_config(tmp_path)
    return mysql_config(request.getfixturevalue("mysql_db"))


async def index_columns(config: DatabaseConfig) -> dict[tuple[str, str], tuple[list[str], bool]]:
    store = await open_store(config)
    try:
        if config.db_type == "sqlite":
            found = {}
            for table in sorted({table for table, _ in EXPECTED_INDEXES}):
                for row in await store.fetchall(f'PRAGMA index_list("{table}")'):
                    name, unique = str(row[1]), bool(row[2])
                    info = await store.fetchall(f'PRAGMA index_info("{name}")')
                    # A column that is not in the table shows as None (the "teant" bug).
                    found[(table, name)] = ([str(r[2]) for r in info], unique)
            return found
        rows = await store.fetchall(
            "SELECT table_name, index_name, column_name, non_unique FROM "
            "information_schema.statistics WHERE table_schema = ? ORDER BY table_name, "
            "index_name, seq_in_index", (config.db_name,))
        mysql: dict[tuple[str, str], tuple[list[str], bool]] = {}
        for table, name, column, non_unique in rows:
            mysql.setdefault((str(table), str(name)), ([], not non_unique))[0].append(str(column))
        return mysql
    finally:
        await store.close()


async def test_every_index_covers_the_intended_columns(db_config: DatabaseConfig) -> None:
    store = await open_store(db_config)
    try:
        await migrate_up(store)
    finally:
        await store.close()
    found = await index_columns(db_config)
    for key, columns in EXPECTED_INDEXES.items():
        assert key in found, f"index {key} missing; found {sorted(found)}"
        assert found[key][0] == columns, (key, found[key])
        assert found[key][1] == (key[1] in UNIQUE), key


async def test_tenant_cannot_be_null_and_usernames_are_unique_across_tenants(
        db_config: DatabaseConfig) -> None:
    store = await open_store(db_config)
    try:
        await migrate_up(store)
        for sql in ("INSERT INTO clients_auth (id, password, tenant) VALUES ('c1', 'p', NULL)",
                    "INSERT INTO users (username, password, tenant) VALUES ('u', 'p', NULL)",
                    "INSERT INTO `groups` (username, `group`, tenant) VALUES ('u', 'g', NULL)"
                    if db_config.db_type == "mysql" else
                    'INSERT INTO "groups" (username, "group", tenant) VALUES (\'u\', \'g\', NULL)'):
            with pytest.raises(StoreError):
                await store.execute(sql)
        await store.execute("INSERT INTO users (username, password, tenant) VALUES (?, ?, ?)",
                            ("alice", "x", "J"))
        with pytest.raises(StoreError):
            await store.execute("INSERT INTO users (username, password, tenant) VALUES (?, ?, ?)",
                                ("alice", "y", "G"))
        rows = await store.fetchall("SELECT tenant FROM users WHERE username = ?", ("alice",))
        assert rows == [("J",)]
    finally:
        await store.close()


async def test_up_down_up_round_trips_and_is_idempotent(db_config: DatabaseConfig) -> None:
    store = await open_store(db_config)
    try:
        versions = [m.version for m in available(store.dialect)]
        assert [m.version for m in await migrate_up(store)] == versions
        assert await migrate_up(store) == []
        assert all(applied for _, applied in await status(store))
        reverted = await migrate_down(store, len(versions))
        assert [m.version for m in reverted] == versions[::-1]
        assert await store.table_columns("users") is None
        assert await store.table_columns("clients") is None
        assert not any(applied for _, applied in await status(store))
        assert [m.version for m in await migrate_up(store)] == versions
        assert await store.table_columns("clients_auth") == ["id", "password", "tenant"]
    finally:
        await store.close()


def test_sqlite_files_run_by_hand_with_sqlite3(tmp_path: Path) -> None:
    db = tmp_path / "hand.db"
    for migration in available("sqlite"):
        subprocess.run(["sqlite3", str(db)], input=migration.up.read_bytes(), check=True)
    with sqlite3.connect(db) as conn:
        info = conn.execute('PRAGMA index_info("groups_username_group_tenant")').fetchall()
    assert [row[2] for row in info] == ["username", "group", "tenant"]


@pytest.mark.mysql
def test_mysql_files_run_by_hand_with_mysql_client(mysql_db: str) -> None:
    for migration in available("mysql"):
        subprocess.run(["mysql", "-h", MYSQL_HOST, "-P", str(MYSQL_PORT), "-u", MYSQL_USER,
                        f"--password={MYSQL_PASSWORD}", mysql_db],
                       input=migration.up.read_bytes(), check=True)
    conn = pymysql.connect(host=MYSQL_HOST, port=MYSQL_PORT, user=MYSQL_USER,
                           password=MYSQL_PASSWORD, database=mysql_db)
    with conn.cursor() as cursor:
        cursor.execute("SHOW TABLES")
        assert {row[0] for row in cursor.fetchall()} >= {"clients_auth", "users", "groups",
                                                         "clients"}
    conn.close()


def test_every_up_has_a_down() -> None:
    for dialect in ("sqlite", "mysql"):
        ups = sorted(p.name for p in (MIGRATIONS_DIR / dialect).glob("*.up.sql"))
        assert ups and all((MIGRATIONS_DIR / dialect / u.replace(".up.", ".down.")).exists()
                           for u in ups)
    assert [m.name for m in available("sqlite")] == [m.name for m in available("mysql")]


@pytest.fixture(params=["sqlite", pytest.param("mysql", marks=pytest.mark.mysql)])
def config_file(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    if request.param == "sqlite":
        db: dict[str, object] = {"db_type": "sqlite", "db_name": str(tmp_path / "op.db")}
    else:
        db = request.getfixturevalue("mysql_database_section")
    return write_config(tmp_path / "rportd.conf",
                        {"server": {"allow_root": True, "data_dir": str(tmp_path)},
                         "database": db})


def test_rportd_migrate_command(config_file: Path, tmp_path: Path) -> None:
    def migrate(*extra: str) -> str:
        result = run_rportd(["migrate", "-c", str(config_file), *extra], cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        return result.stdout

    names = [f"{m.version:04d}_{m.name}" for m in available("sqlite")]
    last, before_last = names[-1], names[-2]
    assert "0001_auth_tables\tpending" in migrate("--status")
    assert migrate().splitlines() == [f"applied {name}" for name in names]
    assert migrate() == "schema is up to date\n"
    assert f"{last}\tapplied" in migrate("--status")
    assert migrate("--down", "2") == f"reverted {last}\nreverted {before_last}\n"
    assert f"{before_last}\tpending" in migrate("--status")
    assert migrate() == f"applied {before_last}\napplied {last}\n"


@pytest.mark.mysql
async def test_mysql_over_a_unix_socket(mysql_db: str) -> None:
    socket_path = "/run/mysqld/mysqld.sock"
    if not Path(socket_path).exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"MariaDB's socket {socket_path} is missing in CI")
        pytest.skip("no local MariaDB socket")  # TCP is covered everywhere else
    config = DatabaseConfig("mysql", f"socket:{socket_path}", MYSQL_USER, MYSQL_PASSWORD,
                            mysql_db)
    store = await open_store(config)
    try:
        await migrate_up(store)
        assert await store.table_columns("users") == ["username", "password", "tenant"]
    finally:
        await store.close()
