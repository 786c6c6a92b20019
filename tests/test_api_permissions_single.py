"""Permissions without multi-tenancy (the server is one tenant), read-only user sources, and the
audit log while the database is locked: the write's answer neither waits nor is lost, and the
entry is written once the database is back."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest

from .conftest import MYSQL_HOST, MYSQL_PORT, mysql_execute
from .helpers import Response, http, write_config
from .processes import Rportd, wait_for
from .test_store_outage import Relay, _migrate

PASSWORDS = {"admin": "admin-pw-1", "viewer": "viewer-pw-2", "plain": "plain-pw-3"}


def _hash(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()


class Server:
    def __init__(self, rportd: Rportd, db: Path):
        self.rportd, self.db = rportd, db

    def call(self, method: str, path: str, user: str, data: object = None) -> Response:
        return http(self.rportd.api_port, method, path, basic=(user, PASSWORDS[user]),
                    body=None if data is None else json.dumps(data).encode())


def _migrated(tmp: Path) -> dict[str, object]:
    database: dict[str, object] = {"db_type": "sqlite", "db_name": str(tmp / "rportd.db"),
                                   "db_timeout": "3s"}
    migrate = write_config(tmp / "migrate.conf", {"server": {"allow_root": True,
                                                             "data_dir": str(tmp / "data")},
                                                  "database": database})
    subprocess.run([sys.executable, "-m", "rportd.cli", "migrate", "-c", str(migrate)],
                   check=True, capture_output=True)
    return database


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """multi_tenancy off, users in tables: admin (Administrators), viewer (viewers), plain."""
    tmp = tmp_path_factory.mktemp("single")
    database = _migrated(tmp)
    with sqlite3.connect(str(database["db_name"])) as conn:
        conn.executemany("INSERT INTO users (username, password) VALUES (?, ?)",
                         [(u, _hash(p)) for u, p in PASSWORDS.items()])
        conn.executemany('INSERT INTO "groups" (username, "group") VALUES (?, ?)',
                         [("admin", "Administrators"), ("viewer", "viewers")])
    rportd = Rportd(tmp, {"server": {"auth_table": "clients_auth"},
                          "api": {"auth_user_table": "users", "auth_group_table": "groups"},
                          "database": database}).start()
    yield Server(rportd, Path(str(database["db_name"])))
    rportd.stop()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Users from [api] auth_file: read-only through the API."""
    tmp = tmp_path_factory.mktemp("files")
    database = _migrated(tmp)
    (tmp / "users.json").write_text(json.dumps([
        {"username": "admin", "password": _hash(PASSWORDS["admin"]), "groups": ["Administrators"]},
        {"username": "plain", "password": _hash(PASSWORDS["plain"])}]))
    rportd = Rportd(tmp, {"server": {"auth_table": "clients_auth"},
                          "api": {"auth_file": str(tmp / "users.json")},
                          "database": database}).start()
    yield Server(rportd, Path(str(database["db_name"])))
    rportd.stop()


def test_without_grants_every_user_may_do_everything_but_manage_users(tables: Server) -> None:
    for user in ("viewer", "plain"):
        assert tables.call("DELETE", "/api/v1/clients/none", user).status == 404
        assert tables.call("GET", "/api/v1/users", user).error_code == "ERR_CODE_FORBIDDEN"
    assert tables.call("GET", "/api/v1/users", "admin").status == 200


def test_grants_apply_to_the_single_tenant_and_revert(tables: Server) -> None:
    put = tables.call("PUT", "/api/v1/user-groups/viewers", "admin", {"permissions": ["*:read"]})
    assert put.status == 200, put.body
    try:
        assert tables.call("GET", "/api/v1/clients", "viewer").status == 200
        for user in ("viewer", "plain"):
            refused = tables.call("DELETE", "/api/v1/clients/none", user)
            assert (refused.status, refused.error_code) == (403, "ERR_CODE_FORBIDDEN")
        assert tables.call("GET", "/api/v1/clients", "plain").status == 403  # granted nothing
        assert tables.call("DELETE", "/api/v1/clients/none", "admin").status == 404
    finally:
        assert tables.call("DELETE", "/api/v1/user-groups/viewers", "admin").status == 204
    assert tables.call("DELETE", "/api/v1/clients/none", "plain").status == 404


def test_usernames_are_not_prefixed_without_tenancy(tables: Server) -> None:
    made = tables.call("POST", "/api/v1/users", "admin",
                       {"username": "newbie", "password": "newbie-pw-1", "groups": ["viewers"]})
    assert made.status == 201 and made.json()["data"]["username"] == "newbie"
    again = tables.call("POST", "/api/v1/users", "admin",
                        {"username": "newbie", "password": "newbie-pw-1"})
    assert (again.status, again.error_code) == (409, "ERR_CODE_ALREADY_EXIST")
    listed = {u["username"]: u["groups"] for u in
              tables.call("GET", "/api/v1/users", "admin").json()["data"]}
    assert listed["newbie"] == ["viewers"] and listed["admin"] == ["Administrators"]
    assert tables.call("DELETE", "/api/v1/users/newbie", "admin").status == 204


def test_file_users_are_read_only(files: Server) -> None:
    listed = files.call("GET", "/api/v1/users", "admin").json()["data"]
    assert listed == [{"username": "admin", "groups": ["Administrators"]},
                      {"username": "plain", "groups": []}]
    for method, path, data in (("POST", "/api/v1/users", {"username": "x", "password": "y" * 9}),
                               ("PUT", "/api/v1/users/plain", {"password": "y" * 9}),
                               ("DELETE", "/api/v1/users/plain", None)):
        answer = files.call(method, path, "admin", data)
        assert (answer.status, answer.error_code) == (405, "ERR_CODE_USERS_RO"), path
    assert b"$2" not in files.call("GET", "/api/v1/users", "admin").body


def test_locked_database_neither_delays_nor_loses_the_answer(files: Server) -> None:
    locker = sqlite3.connect(str(files.db), timeout=0.1, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        started = time.monotonic()
        answers = [files.call("POST", "/api/v1/users", "plain",
                              {"username": f"u{i}", "password": "p" * 9}) for i in range(3)]
        elapsed = time.monotonic() - started
        assert [a.error_code for a in answers] == ["ERR_CODE_FORBIDDEN"] * 3
        # each audit insert waits 2.4 s on the lock (busy_timeout, 0.8 x db_timeout) before it
        # fails and is retried; answers that waited on it would take over 7 s
        assert elapsed < 4, elapsed
        wait_for(lambda: "audit entries failed" in files.rportd.log_text(), timeout=10,
                 what="the audit writer's retry in the log")
    finally:
        locker.execute("ROLLBACK")
        locker.close()

    def written() -> list[object]:
        listed = files.call("GET", "/api/v1/auditlog?filter[username]=plain"
                                   "&filter[result]=ERR_CODE_FORBIDDEN", "admin")
        return list(listed.json()["data"]) if listed.status == 200 else []

    entries = wait_for(lambda: len(written()) >= 3 and written(), timeout=15,
                       what="the three refused writes in the audit log")
    assert {e["details"]["body"]["username"] for e in entries} == {"u0", "u1", "u2"}
    assert "p" * 9 not in json.dumps(entries)


@pytest.fixture
def relay() -> Iterator[Relay]:
    """A relay to the real MariaDB that the test can make refuse (test_store_outage.py)."""
    relay = Relay((MYSQL_HOST, MYSQL_PORT))
    yield relay
    relay.close()


@pytest.mark.mysql
def test_mysql_outage_keeps_the_last_grants_and_audits_afterwards(
        tmp_path: Path, mysql_db: str, relay: Relay) -> None:
    """File users on MariaDB: while the database refuses, what is in memory is still served
    under the grants last read (reads pass, writes stay refused), and the refusals recorded
    meanwhile reach the audit log once it is back."""
    direct: dict[str, object] = {"db_type": "mysql", "db_host": f"{MYSQL_HOST}:{MYSQL_PORT}",
                                 "db_user": "root", "db_name": mysql_db}
    _migrate(tmp_path, direct)
    mysql_execute(mysql_db, "INSERT INTO group_permissions (tenant, `group`, permissions) "
                            "VALUES ('', 'viewers', '[\"*:read\"]')")
    (tmp_path / "users.json").write_text(json.dumps([
        {"username": "admin", "password": _hash(PASSWORDS["admin"]), "groups": ["Administrators"]},
        {"username": "viewer", "password": _hash(PASSWORDS["viewer"]), "groups": ["viewers"]}]))
    rportd = Rportd(tmp_path, {
        "server": {"auth": "c1:secret"}, "api": {"auth_file": str(tmp_path / "users.json")},
        "database": {**direct, "db_host": f"127.0.0.1:{relay.port}", "db_timeout": "2s"}}
    ).start()
    server = Server(rportd, tmp_path)
    try:
        assert server.call("GET", "/api/v1/clients", "viewer").status == 200
        relay.set("refuse")
        assert server.call("GET", "/api/v1/clients", "viewer").status == 200
        refused = server.call("DELETE", "/api/v1/clients/a1", "viewer")
        assert (refused.status, refused.error_code) == (403, "ERR_CODE_FORBIDDEN")
        relay.set("forward")
        wait_for(lambda: server.call("GET", "/api/v1/auditlog?filter[username]=viewer",
                                     "admin").json().get("data"), timeout=15,
                 what="the refusal written once the database is back")
    finally:
        rportd.stop()
    assert "Traceback" not in rportd.log_text()
