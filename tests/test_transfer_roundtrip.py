"""Giving a tenant its own server: tenant J exported from a MariaDB rportd (with --then-delete)
and imported into a SQLite rportd lists the same through the API, and its agents reconnect with
the same fingerprint and get their tunnels back. The archive holds nothing of tenant G."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rportd.wire.hostkey import derive_key_from_seed, fingerprint

from .api_world import (
    CREDENTIALS,
    World,
    build_world,
    create_mysql_database,
    create_seed_tables,
    drop_mysql_database,
)
from .conftest import MYSQL_HOST, MYSQL_PASSWORD, MYSQL_PORT, MYSQL_USER, require_mysql
from .helpers import free_port
from .processes import Agent, port_open, wait_for
from .test_agents import EchoTarget, carry
from .transfer_world import SEED, add_tenant, target, tenant_cli

FINGERPRINT = fingerprint(derive_key_from_seed(SEED))
J_AGENTS = (("x", "cj"), ("jonly", "cj"))

# Rows of the tables other issues fill (jobs, groups, tenants, permissions, tokens, audit), per
# tenant, with values that name their tenant so a scan of the archive can find any leak.
EXTRA = {
    "tenants": ("name, created_at, status, quotas", "?, '2026-01-01T00:00:00Z', 'active', '{}'",
                lambda t: (t,)),
    "multi_jobs": ("tenant, jid, started_at, created_by, details",
                   "?, ?, '2026-01-02T00:00:00Z', ?, '{}'", lambda t: (t, f"{t}-mjob", f"{t}-op")),
    "jobs": ("tenant, jid, client_id, multi_job_id, status, started_at, created_by, details",
             "?, ?, 'x', ?, 'successful', '2026-01-02T00:00:01Z', ?, '{\"result\": 1}'",
             lambda t: (t, f"{t}-job", f"{t}-mjob", f"{t}-op")),
    "client_groups": ("tenant, id, description, params", "?, ?, ?, '{}'",
                      lambda t: (t, f"{t}-group", f"{t} servers")),
    "group_permissions": ("tenant, {group}, permissions", "?, ?, '[\"*\"]'",
                          lambda t: (t, f"{t}-admins")),
    "api_tokens": ("id, tenant, username, name, secret_hash, scopes, created_at",
                   "?, ?, ?, 'ci', ?, '[]', '2026-01-03T00:00:00Z'",
                   lambda t: (f"{t}-token", t, "alice" if t == "J" else "gina", f"{t}-hash-0123")),
    "audit_log": ("tenant, username, action, target, result, source, at, details",
                  "?, ?, 'clients.delete', ?, 'ok', '', '2026-01-04T00:00:00Z', '{}'",
                  lambda t: (t, "alice" if t == "J" else "gina", f"{t}-target")),
}


@pytest.fixture
def source(tmp_path: Path) -> Iterator[World]:
    require_mysql().close()
    database: dict[str, object] = {"db_type": "mysql", "db_host": f"{MYSQL_HOST}:{MYSQL_PORT}",
                                   "db_user": MYSQL_USER, "db_password": MYSQL_PASSWORD,
                                   "db_name": create_mysql_database()}
    (tmp_path / "source").mkdir()
    world = build_world(tmp_path / "source", "mysql", database,
                        extra={"server": {"key_seed": SEED, "keep_lost_clients": "168h"}},
                        agents=(*J_AGENTS, ("gonly", "cg")))
    try:
        yield world
    finally:
        world.stop()
        drop_mysql_database(str(database["db_name"]))


def _fill(world: World) -> None:
    for table, (columns, marks, values) in EXTRA.items():
        for tenant in ("J", "G"):
            world.sql(f"INSERT INTO {table} ({columns.format(group='`group`')}) VALUES ({marks})",
                      values(tenant))


def _answers(world: World) -> dict[str, Any]:
    """What alice (tenant J) sees through the API, without what a reconnect changes."""
    clients = world.request("GET", "/api/v1/clients", "alice").json()["data"]
    for client in clients:
        for volatile in ("address", "disconnected_at", "session_id"):
            client.pop(volatile)
        # what the agent says of its own flags: another server, and the moved agents pin it
        for flag in ("server", "fingerprint"):
            client["client_configuration"]["client"].pop(flag, None)
    return {"clients": sorted(clients, key=lambda c: c["id"]),
            "credentials": world.request("GET", "/api/v1/clients-auth", "alice").json(),
            "me": world.request("GET", "/api/v1/me", "alice").json()}


def _rows(world: World, table: str, tenant: str) -> list[tuple[Any, ...]]:
    column = "name" if table == "tenants" else "tenant"
    rows = world.sql(f"SELECT * FROM {table} WHERE {column} = ?", (tenant,))
    return sorted(rows, key=repr)


def _j_rows(world: World) -> dict[str, list[tuple[Any, ...]]]:
    """Tenant J's rows in the tables no API of this branch lists (audit ids are the target's)."""
    rows = {table: _rows(world, table, "J") for table in EXTRA if table != "audit_log"}
    rows["audit_log"] = world.sql("SELECT username, action, target, result, at, details "
                                  "FROM audit_log WHERE tenant = 'J'")
    return rows


def _g_marks(source: World) -> list[bytes]:
    """Everything that identifies tenant G (and the orphan), as bytes to scan the archive for."""
    hashes = [str(r[0]).encode() for r in source.sql("SELECT password FROM users WHERE "
                                                     "username = 'gina'")]
    return [b"gina", b"cg-secret", b"gonly", b"x@cg", b"corph", b"co-secret", b"o1@", b"G-",
            b'"G"', b'"ops"', *hashes]


def test_a_tenant_moves_from_mariadb_to_its_own_sqlite_server(tmp_path: Path,
                                                              source: World) -> None:
    echo = EchoTarget()
    lport = free_port()
    made = source.request("PUT", f"/api/v1/clients/jonly/tunnels?remote=127.0.0.1:{echo.port}"
                                 f"&local=127.0.0.1:{lport}", "alice")
    assert made.status == 200, made.body
    _fill(source)
    before = _answers(source)
    kept = {table: _rows(source, table, "G") for table in EXTRA}
    j_before = _j_rows(source)
    source.stop()

    archive = tmp_path / "J.rportd-tenant"
    moved = tenant_cli(source, "export", "--tenant", "J", "--out", str(archive), "--then-delete",
                       process=True)
    assert moved.returncode == 0, moved.stderr
    assert "deleted tenant 'J' here" in moved.stderr and "(archive verified)" in moved.stderr
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600
    data = archive.read_bytes()
    assert json.loads(data.split(b"\n", 1)[0])["host_key_fingerprint"] == FINGERPRINT
    leaks = [mark for mark in _g_marks(source) if mark in data]
    assert not leaks, f"tenant G's data in J's archive: {leaks}"
    assert all(_rows(source, t, "J") == [] for t in (*EXTRA, "clients", "clients_auth", "users"))
    assert {t: _rows(source, t, "G") for t in EXTRA} == kept, "G is untouched"

    own = target(tmp_path / "target", "sqlite")
    imported = tenant_cli(own, "import", "--tenant", "J", "--from-export", str(archive),
                          process=True)
    assert imported.returncode == 0, imported.stderr
    own.rportd.start()
    for client_id, auth_id in J_AGENTS:
        agent = Agent(tmp_path, own.rportd.url, f"{auth_id}:{CREDENTIALS[auth_id][0]}", "--id",
                      client_id, "--name", f"{client_id}@{auth_id}", "--fingerprint",
                      FINGERPRINT, name=f"moved-{client_id}")
        own.agents.append(agent.start())
    try:
        for agent in own.agents:
            agent.wait_connected()
        wait_for(lambda: port_open(lport), what="the moved tunnel's port")
        assert carry(lport, 1 << 16)[0] == echo.received.hexdigest()
        wait_for(lambda: _answers(own) == before,
                 what=lambda: f"the same answers:\n{_answers(own)}\n{before}")
        assert _j_rows(own) == j_before
    finally:
        own.stop()
        echo.close()


def test_tables_from_rports_case_insensitive_ddl_keep_j_and_J_apart(tmp_path: Path) -> None:
    """Operators' MySQL tables made from rport's DDL compare case-insensitively: tenant `j`'s
    rows never enter J's archive, a username equal only under the collation is a conflict, and
    deleting J leaves j alone."""
    require_mysql().close()
    database: dict[str, object] = {"db_type": "mysql", "db_host": f"{MYSQL_HOST}:{MYSQL_PORT}",
                                   "db_user": MYSQL_USER, "db_password": MYSQL_PASSWORD,
                                   "db_name": create_mysql_database()}
    try:
        create_seed_tables(database)
        world = target(tmp_path, "mysql", database=database)
        add_tenant(world, "J", ("cj", "cj-secret"), ("alice", "alice-pw", "admins"))
        add_tenant(world, "j", ("cj-lower", "lower-secret"), ("jill", "jill-pw", "jops"))
        out = tmp_path / "J.archive"
        moved = tenant_cli(world, "export", "--tenant", "J", "--out", str(out), "--then-delete")
        assert moved.returncode == 0, moved.stderr
        data = out.read_bytes()
        assert b"cj-lower" not in data and b"jill" not in data and b"jops" not in data
        assert world.sql("SELECT id, tenant FROM clients_auth") == [("cj-lower", "j")]
        assert world.sql("SELECT username, tenant FROM users") == [("jill", "j")]
        world.sql("INSERT INTO users (username, password, tenant) VALUES ('ALICE', 'x', 'j')")
        refused = tenant_cli(world, "import", "--tenant", "J", "--from-export", str(out))
        assert refused.returncode == 1
        assert ("users: username 'alice' already exists in another tenant (users are unique "
                "across tenants), as username 'ALICE' (the table's collation makes them "
                "equal)") in refused.stderr, refused.stderr
        world.sql("DELETE FROM users WHERE username = 'ALICE'")
        back = tenant_cli(world, "import", "--tenant", "J", "--from-export", str(out))
        assert back.returncode == 0, back.stderr
        assert sorted(world.sql("SELECT id, tenant FROM clients_auth")) == [
            ("cj", "J"), ("cj-lower", "j")]
    finally:
        drop_mysql_database(str(database["db_name"]))
