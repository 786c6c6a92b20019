"""Importing a standalone rport server as a tenant: real rport data directories (SQLite files made
from rport's published migrations) and auth files, imported by the real command into SQLite and
MariaDB rportd, then real agents reconnecting with the imported credentials."""

from __future__ import annotations

import json
import os
import select
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rportd.transfer.rport_import import read_data_dir
from rportd.wire.hostkey import derive_key_from_seed, fingerprint

from .api_world import World, drop_mysql_database
from .conftest import require_mysql
from .helpers import free_port, http
from .processes import Agent, port_open, wait_for
from .rport_data import SCHEMA, RportClient, make_data_dir, tunnel_json, write_auth_files
from .test_agents import EchoTarget, carry
from .transfer_world import (
    SEED,
    add_tenant,
    bcrypt_hash,
    dump,
    integrity_ok,
    target,
    tenant_cli,
)

ADMIN = ("acme-admin", "acme-admin-pw")
FINGERPRINT = fingerprint(derive_key_from_seed(SEED))


@pytest.fixture(params=["sqlite", "mysql"])
def kind(request: pytest.FixtureRequest) -> str:
    if request.param == "mysql":
        require_mysql().close()
    return str(request.param)


@pytest.fixture
def worlds() -> Iterator[list[World]]:
    made: list[World] = []
    yield made
    for world in made:
        world.stop()
        if world.kind == "mysql":
            drop_mysql_database(str(world.database["db_name"]))


def rport_server(tmp: Path, lport: int, rport: int, layout: str = "0.1.24") -> list[str]:
    """An rport server's data_dir and auth files; the import options naming them."""
    clients = [RportClient("web1", "cred-web", "web1.acme", [tunnel_json("3", lport, rport)],
                           disconnected_at=None),
               RportClient("db1", "cred-db", "db1.acme", [],
                           disconnected_at=None)]
    data_dir = make_data_dir(tmp / "rport-data", layout, clients)
    auth, users = write_auth_files(tmp, {"cred-web": "web-secret",
                                         "cred-db": bcrypt_hash("db-secret")},
                                   [{"username": ADMIN[0], "password": bcrypt_hash(ADMIN[1]),
                                     "groups": ["Administrators"]}])
    return ["--from-rport", str(data_dir), "--clients-auth-file", str(auth), "--api-auth-file",
            str(users), "--rport-key-seed", SEED]


def test_rport_server_becomes_a_tenant_and_its_agents_get_their_tunnels_back(
        tmp_path: Path, kind: str, worlds: list[World]) -> None:
    echo = EchoTarget()
    lport = free_port()
    world = target(tmp_path / "rportd", kind)
    worlds.append(world)
    add_tenant(world, "other", ("cred-other", "other-secret"), ("olga", "olga-pw", "ops"))
    done = tenant_cli(world, "import", "--tenant", "acme",
                      *rport_server(tmp_path, lport, echo.port), process=True)
    assert done.returncode == 0, done.stderr
    assert "clients: 2 new" in done.stderr and "jobs: 2 new" in done.stderr
    assert "imported tenant 'acme': " in done.stderr
    world.rportd.start()
    agent = Agent(tmp_path, world.rportd.url, "cred-web:web-secret", "--id", "web1",
                  "--fingerprint", FINGERPRINT, name="web1")
    world.agents.append(agent.start())
    agent.wait_connected()
    wait_for(lambda: port_open(lport), what=f"the imported tunnel on port {lport}")
    sent, echoed = carry(lport, 1 << 16)
    assert sent == echoed == echo.received.hexdigest()
    answer = http(world.rportd.api_port, "GET", "/api/v1/clients/web1", basic=ADMIN).json()["data"]
    assert [(t["id"], t["lport"], t["rport"]) for t in answer["tunnels"]] == [
        ("3", str(lport), str(echo.port))]
    assert answer["tenant"] == "acme" and answer["connection_state"] == "connected"
    listed = http(world.rportd.api_port, "GET", "/api/v1/clients", basic=ADMIN).json()["data"]
    assert sorted(c["id"] for c in listed) == ["db1", "web1"]
    assert http(world.rportd.api_port, "GET", "/api/v1/clients/web1",
                basic=("olga", "olga-pw")).status == 404, "another tenant does not see it"
    me = http(world.rportd.api_port, "GET", "/api/v1/me", basic=ADMIN).json()["data"]
    assert me["groups"] == ["Administrators"]
    bcrypt_agent = Agent(tmp_path, world.rportd.url, "cred-db:db-secret", "--id", "db1",
                         name="db1")
    world.agents.append(bcrypt_agent.start())
    bcrypt_agent.wait_connected()
    echo.close()


def test_jobs_and_groups_keep_their_ids_and_timestamps_become_iso(tmp_path: Path) -> None:
    options = rport_server(tmp_path, 20001, 22)
    world = target(tmp_path / "rportd", "sqlite")
    assert tenant_cli(world, "import", "--tenant", "acme", *options).returncode == 0
    jobs = world.sql("SELECT tenant, jid, client_id, multi_job_id, started_at, finished_at "
                     "FROM jobs ORDER BY jid")
    assert jobs == [("acme", "job-0", "web1", "mj-1", "2021-02-19T09:00:00.500000Z",
                     "2021-02-19T09:00:01Z"),
                    ("acme", "job-1", "web1", None, "2021-02-19T09:00:00.500000Z",
                     "2021-02-19T09:00:01Z")]
    assert world.sql("SELECT tenant, jid FROM multi_jobs") == [("acme", "mj-1")]
    assert world.sql("SELECT tenant, id, description FROM client_groups") == [
        ("acme", "web", "group web")]
    assert world.sql("SELECT id, password FROM clients_auth WHERE id = 'cred-web'") == [
        ("cred-web", "web-secret")], "plaintext stays as it was without --hash-plaintext"


@pytest.mark.parametrize("layout", ["0.1.21", "0.1.22", "0.1.24", "openrport"])
def test_every_rport_layout_is_read(tmp_path: Path, layout: str) -> None:
    clients = [RportClient("c1", "a1", "h1", [tunnel_json("1", 2222, 22)])]
    data_dir = make_data_dir(tmp_path, layout, clients, jobs=1)
    rows, notes = read_data_dir(data_dir)
    client = rows["clients"][0]
    assert (client["id"], client["client_auth_id"]) == ("c1", "a1")
    assert client["disconnected_at"] == "2021-02-20T10:11:12.123456Z"
    assert json.loads(client["tunnels"])[0]["lport"] == "2222" and client["next_tunnel_id"] == 2
    assert "tunnels" not in json.loads(client["details"])
    job = rows["jobs"][0]
    assert job["client_id"] == "c1" and json.loads(job["details"])["client_id"] == "c1"
    assert job["started_at"] == "2021-02-19T09:00:00.500000Z"
    assert [g["id"] for g in rows["client_groups"]] == ([] if layout == "0.1.21" else ["web"])
    assert notes == []


def test_conflicts_are_listed_in_full_and_nothing_changes(tmp_path: Path) -> None:
    world = target(tmp_path / "rportd", "sqlite")
    add_tenant(world, "other", ("cred-web", "x"), (ADMIN[0], "pw", "ops"))
    world.sql("INSERT INTO clients (tenant, id, client_auth_id, details, tunnels) VALUES "
              "('other', 'o1', 'cred-web', '{}', ?)", (json.dumps([tunnel_json("1", 20002, 22)]),))
    before = dump(world)
    options = rport_server(tmp_path, 20002, 22)
    dry = tenant_cli(world, "import", "--tenant", "acme", "--dry-run", *options)
    assert dry.returncode == 1
    for refused in (dry, tenant_cli(world, "import", "--tenant", "acme", *options)):
        assert refused.returncode == 1
        assert "3 conflicts; nothing was changed" in refused.stderr
        assert ("clients: tunnel port 20002 of client 'web1' is already a tunnel port of client "
                "o1 of tenant other on the target") in refused.stderr
        assert "credentials: id 'cred-web' already exists in another tenant" in refused.stderr
        assert f"users: username '{ADMIN[0]}' already exists in another tenant" in refused.stderr
    assert "clients: 2 new" in dry.stderr, "the dry run says what would move"
    assert dump(world) == before


def test_dry_run_changes_nothing_and_importing_twice_changes_nothing(tmp_path: Path) -> None:
    world = target(tmp_path / "rportd", "sqlite")
    options = rport_server(tmp_path, 20003, 22)
    before = dump(world)
    dry = tenant_cli(world, "import", "--tenant", "acme", "--dry-run", *options)
    assert dry.returncode == 0 and "would import tenant 'acme': 10 rows new" in dry.stderr
    assert dump(world) == before
    assert tenant_cli(world, "import", "--tenant", "acme", *options).returncode == 0
    once = dump(world)
    again = tenant_cli(world, "import", "--tenant", "acme", *options)
    assert again.returncode == 0 and "0 rows new, 10 unchanged" in again.stderr
    assert dump(world) == once


def test_hash_plaintext_stores_bcrypt_and_stays_idempotent(tmp_path: Path) -> None:
    world = target(tmp_path / "rportd", "sqlite")
    options = [*rport_server(tmp_path, 20004, 22), "--hash-plaintext"]
    assert tenant_cli(world, "import", "--tenant", "acme", *options).returncode == 0
    stored = world.sql("SELECT password FROM clients_auth WHERE id = 'cred-web'")[0][0]
    assert stored.startswith("$2b$")
    again = tenant_cli(world, "import", "--tenant", "acme", *options)
    assert again.returncode == 0 and "0 rows new" in again.stderr, again.stderr


def test_another_host_key_is_refused_with_the_fix(tmp_path: Path) -> None:
    world = target(tmp_path / "rportd", "sqlite", key_seed="another-seed")
    before = dump(world)
    options = rport_server(tmp_path, 20005, 22)
    refused = tenant_cli(world, "import", "--tenant", "acme", *options)
    assert refused.returncode == 1 and FINGERPRINT in refused.stderr
    assert "set [server] key_seed to the source server's key_seed" in refused.stderr
    assert dump(world) == before
    accepted = tenant_cli(world, "import", "--tenant", "acme", "--accept-new-fingerprint",
                          *options)
    assert accepted.returncode == 0, accepted.stderr


def test_import_is_refused_while_rportd_serves_the_target(tmp_path: Path,
                                                          worlds: list[World]) -> None:
    world = target(tmp_path / "rportd", "sqlite")
    worlds.append(world)
    world.rportd.start()
    refused = tenant_cli(world, "import", "--tenant", "acme", *rport_server(tmp_path, 20006, 22))
    assert refused.returncode == 1 and "stop it before importing" in refused.stderr, refused.stderr
    assert world.sql("SELECT COUNT(*) FROM clients") == [(0,)]


def _read_until(proc: subprocess.Popen[bytes], marker: bytes, timeout: float = 20) -> bytes:
    """The child's stderr up to `marker`, read unbuffered (a buffered reader can hold the line
    that select() already reported), within a deadline."""
    assert proc.stderr is not None
    fd, got = proc.stderr.fileno(), b""
    deadline = time.monotonic() + timeout
    while marker not in got and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        chunk = os.read(fd, 65536) if ready else b""
        if ready and not chunk:
            break
        got += chunk
    return got


def test_kill_9_during_an_import_leaves_the_target_as_before(tmp_path: Path, kind: str,
                                                             worlds: list[World]) -> None:
    """The import pauses (test-only hook) after writing clients inside its transaction, so the
    kill lands midway for certain; the target must hold nothing of it."""
    world = target(tmp_path / "rportd", kind)
    worlds.append(world)
    add_tenant(world, "other", ("cred-other", "x"), ("olga", "pw", "ops"))
    before = dump(world)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RPORTD_")}
    env["RPORTD_TEST_IMPORT_PAUSE_AFTER"] = "clients:30"
    options = rport_server(tmp_path, 20007, 22)
    proc = subprocess.Popen([sys.executable, "-m", "rportd.cli", "tenant", "import", "-c",
                             str(world.rportd.config), "--tenant", "acme", *options],
                            stderr=subprocess.PIPE, env=env)
    try:
        said = _read_until(proc, b"test pause after clients")
        assert b"clients: 2 new" in said, said
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        assert proc.stderr is not None
        proc.stderr.close()
    assert dump(world) == before
    if kind == "sqlite":
        assert integrity_ok(str(world.database["db_name"]))
    again = tenant_cli(world, "import", "--tenant", "acme", *options, process=True)
    assert again.returncode == 0 and "10 rows new" in again.stderr, again.stderr


def test_credentials_and_users_come_from_rports_own_tables(tmp_path: Path) -> None:
    auth_db = tmp_path / "rport-auth.db"
    with sqlite3.connect(auth_db) as conn:
        conn.executescript((SCHEMA / "auth_tables.sqlite.sql").read_text())
        conn.execute("INSERT INTO clients_auth VALUES ('cred-t', 'table-secret')")
        conn.execute("INSERT INTO users VALUES ('tina', ?)", (bcrypt_hash("tina-pw"),))
        conn.executemany('INSERT INTO "groups" VALUES (?, ?)', [("tina", "ops"), ("tina", "dev")])
    data_dir = make_data_dir(tmp_path / "rport-data", "0.1.24",
                             [RportClient("t1", "cred-t", "t1.acme")])
    world = target(tmp_path / "rportd", "sqlite")
    done = tenant_cli(world, "import", "--tenant", "acme", "--from-rport", str(data_dir),
                      "--clients-auth-table", "clients_auth", "--api-auth-user-table", "users",
                      "--api-auth-group-table", "groups", "--rport-db", f"sqlite:{auth_db}")
    assert done.returncode == 0, done.stderr
    assert world.sql("SELECT id, password, tenant FROM clients_auth") == [
        ("cred-t", "table-secret", "acme")]
    assert sorted(world.sql('SELECT username, "group", tenant FROM "groups"')) == [
        ("tina", "dev", "acme"), ("tina", "ops", "acme")]
    bad = tenant_cli(world, "import", "--tenant", "acme", "--from-rport", str(data_dir),
                     "--clients-auth-table", "clients_auth; DROP TABLE x", "--rport-db",
                     f"sqlite:{auth_db}")
    assert bad.returncode == 1 and "not a plain SQL identifier" in bad.stderr


def test_rport_data_that_is_not_rports_is_refused_with_the_reason(tmp_path: Path) -> None:
    data_dir = make_data_dir(tmp_path / "rport-data", "0.1.24", [RportClient("c1", "a1", "h1")])
    with sqlite3.connect(data_dir / "clients.db") as conn:
        conn.execute("UPDATE clients SET details = 'not json'")
    world = target(tmp_path / "rportd", "sqlite")
    refused = tenant_cli(world, "import", "--tenant", "acme", "--from-rport", str(data_dir))
    assert refused.returncode == 1 and "does not hold rport data" in refused.stderr
    missing = tenant_cli(world, "import", "--tenant", "acme", "--from-rport",
                         str(tmp_path / "nowhere"))
    assert missing.returncode == 1 and "is not a directory" in missing.stderr


def test_rports_database_password_is_never_printed(tmp_path: Path) -> None:
    """--rport-db carries rport's database password; a refusal about it must not repeat it."""
    data_dir = make_data_dir(tmp_path / "rport-data", "0.1.24", [RportClient("c1", "a1", "h1")])
    world = target(tmp_path / "rportd", "sqlite")
    for dsn in ("mariadb://rport:hunter2-db-pw@db.example/rport",
                "mysql://rport:hunter2-db-pw@127.0.0.1:1/rport"):
        refused = tenant_cli(world, "import", "--tenant", "acme", "--from-rport", str(data_dir),
                             "--clients-auth-table", "clients_auth", "--rport-db", dsn)
        assert refused.returncode == 1, refused.stderr
        assert "--rport-db" in refused.stderr or "MySQL" in refused.stderr, refused.stderr
        assert "hunter2-db-pw" not in refused.stderr, refused.stderr
