"""Fixtures: SQLite files in tmp_path and fresh databases on the real MariaDB."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pymysql
import pytest

MYSQL_HOST = os.environ.get("RPORTD_TEST_MYSQL_HOST", "127.0.0.1")
MYSQL_PORT = int(os.environ.get("RPORTD_TEST_MYSQL_PORT", "3306"))
MYSQL_USER = os.environ.get("RPORTD_TEST_MYSQL_USER", "root")
MYSQL_PASSWORD = os.environ.get("RPORTD_TEST_MYSQL_PASSWORD", "")


def _admin() -> pymysql.connections.Connection:  # type: ignore[type-arg]
    return pymysql.connect(host=MYSQL_HOST, port=MYSQL_PORT, user=MYSQL_USER,
                           password=MYSQL_PASSWORD, autocommit=True, connect_timeout=5)


def require_mysql() -> pymysql.connections.Connection:  # type: ignore[type-arg]
    """An admin connection to the test MariaDB; without one the test skips, or fails loudly
    when CI=true (MySQL tests may not skip in CI)."""
    try:
        return _admin()
    except pymysql.err.OperationalError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"MariaDB at {MYSQL_HOST}:{MYSQL_PORT} is unreachable in CI: {exc}")
        pytest.skip(f"MariaDB at {MYSQL_HOST}:{MYSQL_PORT} unreachable: {exc}")


@pytest.fixture
def mysql_db() -> Iterator[str]:
    """A fresh, empty MariaDB database, dropped afterwards."""
    admin = require_mysql()
    name = "rportd_test_" + secrets.token_hex(6)
    with admin.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE `{name}`")
    try:
        yield name
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
        admin.close()


@pytest.fixture
def mysql_database_section(mysql_db: str) -> dict[str, object]:
    return {"db_type": "mysql", "db_host": f"{MYSQL_HOST}:{MYSQL_PORT}", "db_user": MYSQL_USER,
            "db_password": MYSQL_PASSWORD, "db_name": mysql_db}


def mysql_execute(db: str, *statements: str) -> None:
    conn = pymysql.connect(host=MYSQL_HOST, port=MYSQL_PORT, user=MYSQL_USER,
                           password=MYSQL_PASSWORD, database=db, autocommit=True)
    try:
        with conn.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement)
    finally:
        conn.close()


@pytest.fixture
def procs() -> Iterator[list[object]]:
    """Processes a test starts; all stopped at teardown, whatever happened."""
    started: list[object] = []
    yield started
    for proc in reversed(started):
        proc.stop()  # type: ignore[attr-defined]
