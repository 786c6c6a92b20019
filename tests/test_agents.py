"""Agents end to end: real rportd and real `rport` processes on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sqlite3
import threading
from pathlib import Path
from typing import Any

import bcrypt
import pytest

from .conftest import mysql_execute
from .helpers import free_port
from .processes import Agent, Rportd, wait_for


def persisted_clients(db: Path) -> dict[str, dict[str, Any]]:
    """The clients table rportd keeps (its registry survives restarts through it)."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT tenant, id, client_auth_id, details, tunnels, "
                            "disconnected_at FROM clients").fetchall()
    return {row[1]: {"tenant": row[0], "client_auth_id": row[2], "details": json.loads(row[3]),
                     "tunnels": json.loads(row[4]), "disconnected_at": row[5]} for row in rows}


def own_db(tmp_path: Path) -> Path:
    return tmp_path / "data" / "rportd.db"


def connected(db: Path, client_id: str) -> dict[str, Any] | None:
    try:
        client = persisted_clients(db).get(client_id)
    except sqlite3.OperationalError:
        return None
    return client if client and client["disconnected_at"] is None else None


class EchoTarget:
    """A TCP server behind the agent: echoes bytes back and hashes what it received."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.received = hashlib.sha256()
        self.count = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    def _echo(self, conn: socket.socket) -> None:
        with conn:
            try:
                while chunk := conn.recv(1 << 16):
                    self.received.update(chunk)
                    self.count += len(chunk)
                    conn.sendall(chunk)
            except OSError:
                pass

    def close(self) -> None:
        self.sock.close()


def carry(port: int, size: int) -> tuple[str, str]:
    """Send `size` random bytes through the tunnel while reading the echo; return both hashes."""
    sent, got = hashlib.sha256(), hashlib.sha256()
    data = os.urandom(1 << 20)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        def send() -> None:
            for offset in range(0, size, len(data)):
                block = data[: min(len(data), size - offset)]
                sent.update(block)
                conn.sendall(block)

        sender = threading.Thread(target=send)
        sender.start()
        received = 0
        while received < size:
            chunk = conn.recv(1 << 16)
            assert chunk, f"tunnel closed after {received} of {size} bytes"
            got.update(chunk)
            received += len(chunk)
        sender.join()
    return sent.hexdigest(), got.hexdigest()


def single_auth(tmp_path: Path, **server: object) -> Rportd:
    return Rportd(tmp_path, {"server": {"auth": "c1:secret", **server}})


# ---------------------------------------------------------------- registration and auth


def test_agent_registers_with_single_auth(tmp_path: Path, procs: list[object]) -> None:
    rportd = single_auth(tmp_path).start()
    procs.append(rportd)
    agent = Agent(tmp_path, rportd.url, "c1:secret", "--id", "vm1", "--name", "My VM", "-t", "a",
                  "-t", "b")
    procs.append(agent.start())
    agent.wait_connected()
    client = wait_for(lambda: connected(own_db(tmp_path), "vm1"), what="vm1 registered")
    assert client["client_auth_id"] == "c1"
    assert client["details"]["name"] == "My VM"
    assert client["details"]["tags"] == ["a", "b"]
    assert client["details"]["hostname"] == socket.gethostname()
    assert client["details"]["os_kernel"] == "linux"


def test_agent_registers_with_auth_file_and_sees_changes_without_restart(
        tmp_path: Path, procs: list[object]) -> None:
    auth_file = tmp_path / "clients.json"
    auth_file.write_text(json.dumps({"c1": "one"}))
    rportd = Rportd(tmp_path, {"server": {"auth_file": str(auth_file)}}).start()
    procs.append(rportd)
    first = Agent(tmp_path, rportd.url, "c1:one", "--id", "a1", name="first")
    procs.append(first.start())
    first.wait_connected()
    hashed = bcrypt.hashpw(b"two", bcrypt.gensalt(4)).decode().replace("$2b$", "$2y$", 1)
    auth_file.write_text(json.dumps({"c1": "one", "c2": hashed}))
    os.utime(auth_file, (1, 1))  # a different mtime even within the same second
    second = Agent(tmp_path, rportd.url, "c2:two", "--id", "a2", name="second")
    procs.append(second.start())
    second.wait_connected()


def _tenant_table_sqlite(tmp_path: Path) -> dict[str, object]:
    db = tmp_path / "auth.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE clients_auth (id TEXT PRIMARY KEY, password TEXT NOT NULL, "
                     "tenant TEXT NOT NULL DEFAULT '')")
        conn.execute("CREATE TABLE users (username TEXT UNIQUE, password TEXT, tenant TEXT)")
        conn.execute("CREATE TABLE groups (username TEXT, \"group\" TEXT, tenant TEXT)")
        hashed = bcrypt.hashpw(b"pj", bcrypt.gensalt(4)).decode()
        conn.executemany("INSERT INTO clients_auth VALUES (?, ?, ?)",
                         [("cj", hashed, "J"), ("cg", "pg", "G"), ("orphan", "po", " ")])
    return {"db_type": "sqlite", "db_name": str(db)}


def _tenancy(database: dict[str, object]) -> dict[str, dict[str, object]]:
    return {"server": {"auth_table": "clients_auth", "multi_tenancy": True},
            "api": {"auth_user_table": "users", "auth_group_table": "groups"},
            "database": database}


def test_tenant_comes_from_the_sqlite_table(tmp_path: Path, procs: list[object]) -> None:
    database = _tenant_table_sqlite(tmp_path)
    from rportd.store.migrate import available

    with sqlite3.connect(str(database["db_name"])) as conn:  # the operator ran `rportd migrate`
        for migration in available("sqlite"):
            conn.executescript(migration.up.read_text())
        conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT, "
                     "applied_at INTEGER)")
        conn.executemany("INSERT INTO schema_migrations VALUES (?, ?, 0)",
                         [(m.version, m.name) for m in available("sqlite")])
    rportd = Rportd(tmp_path, _tenancy(database)).start()
    procs.append(rportd)
    for auth, client_id in (("cj:pj", "x"), ("cg:pg", "x"), ("orphan:po", "o")):
        agent = Agent(tmp_path, rportd.url, auth, "--id", client_id, name=client_id + auth[:2])
        procs.append(agent.start())
        agent.wait_connected()
    with sqlite3.connect(str(database["db_name"])) as conn:
        rows = set(conn.execute("SELECT tenant, id, client_auth_id FROM clients").fetchall())
    # the same id in two tenants is two clients; the orphan is kept, tenantless
    assert rows == {("J", "x", "cj"), ("G", "x", "cg"), ("", "o", "orphan")}


@pytest.mark.mysql
def test_tenant_comes_from_the_mysql_table(tmp_path: Path, procs: list[object], mysql_db: str,
                                           mysql_database_section: dict[str, object]) -> None:
    from rportd.store.migrate import available

    for migration in available("mysql"):
        mysql_execute(mysql_db, *[s for s in migration.up.read_text().split(";\n") if s.strip()])
    mysql_execute(mysql_db,
                  "CREATE TABLE schema_migrations (version INT PRIMARY KEY, name VARCHAR(100), "
                  "applied_at BIGINT)",
                  *[f"INSERT INTO schema_migrations VALUES ({m.version}, '{m.name}', 0)"
                    for m in available("mysql")],
                  # an operator's table may hold the tenant as an INT
                  "ALTER TABLE clients_auth MODIFY tenant INT NULL",
                  "INSERT INTO clients_auth VALUES ('c7', 'p7', 7), ('cnull', 'pn', NULL)")
    rportd = Rportd(tmp_path, _tenancy(mysql_database_section)).start()
    procs.append(rportd)
    for auth, client_id in (("c7:p7", "m7"), ("cnull:pn", "mn")):
        agent = Agent(tmp_path, rportd.url, auth, "--id", client_id, name=client_id)
        procs.append(agent.start())
        agent.wait_connected()
    import pymysql

    from .conftest import MYSQL_HOST, MYSQL_PASSWORD, MYSQL_PORT, MYSQL_USER

    conn = pymysql.connect(host=MYSQL_HOST, port=MYSQL_PORT, user=MYSQL_USER,
                           password=MYSQL_PASSWORD, database=mysql_db)
    with conn.cursor() as cursor:
        cursor.execute("SELECT tenant, id FROM clients ORDER BY id")
        assert cursor.fetchall() == (("7", "m7"), ("", "mn"))
    conn.close()


def test_wrong_password_is_refused_and_retried(tmp_path: Path, procs: list[object]) -> None:
    rportd = single_auth(tmp_path).start()
    procs.append(rportd)
    agent = Agent(tmp_path, rportd.url, "c1:Wr0ng-Zq7", "--id", "nope")
    procs.append(agent.start())
    agent.wait_log("Authentication failed", 2)
    assert "Retrying in 100ms" in agent.log_text()
    assert "Connected" not in agent.log_text()
    assert "Wr0ng-Zq7" not in rportd.log_text(), "no password in the server log"


def test_id_takeover_by_another_credential_is_refused(tmp_path: Path, procs: list[object]) -> None:
    auth_file = tmp_path / "clients.json"
    auth_file.write_text(json.dumps({"a": "pa", "b": "pb"}))
    rportd = Rportd(tmp_path, {"server": {"auth_file": str(auth_file)}}).start()
    procs.append(rportd)
    owner = Agent(tmp_path, rportd.url, "a:pa", "--id", "shared", name="owner")
    procs.append(owner.start())
    owner.wait_connected()
    intruder = Agent(tmp_path, rportd.url, "b:pb", "--id", "shared", name="intruder")
    procs.append(intruder.start())
    assert intruder.wait_exit() == 0
    assert 'client id "shared" is already in use' in intruder.log_text()
    owner.stop()
    wait_for(lambda: not connected(own_db(tmp_path), "shared"), what="owner disconnected")
    # disconnected, the id still belongs to credential a: b cannot inherit it
    late = Agent(tmp_path, rportd.url, "b:pb", "--id", "shared", name="late")
    procs.append(late.start())
    assert late.wait_exit() == 0
    assert persisted_clients(own_db(tmp_path))["shared"]["client_auth_id"] == "a"


# ---------------------------------------------------------------- tunnels


def test_50_mb_each_way_through_a_tunnel(tmp_path: Path, procs: list[object]) -> None:
    target = EchoTarget()
    rportd = single_auth(tmp_path).start()
    procs.append(rportd)
    lport = free_port()
    agent = Agent(tmp_path, rportd.url, "c1:secret", "--id", "t1",
                  remotes=(f"127.0.0.1:{lport}:127.0.0.1:{target.port}",))
    procs.append(agent.start())
    agent.wait_connected()
    size = 50 * 1024 * 1024
    sent, echoed = carry(lport, size)
    assert target.count == size
    assert sent == target.received.hexdigest() == echoed
    target.close()


def closed_without_data(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        try:
            conn.sendall(b"x")
            return conn.recv(10) == b""
        except ConnectionResetError:
            return True


def test_port_allocation_skips_excluded_and_busy_ports(tmp_path: Path,
                                                       procs: list[object]) -> None:
    base = free_port()
    while not all(_free(p) for p in (base, base + 1, base + 2)):
        base = free_port()
    busy = socket.create_server(("0.0.0.0", base + 1))
    rportd = single_auth(tmp_path, used_ports=[f"{base}-{base + 2}"],
                         excluded_ports=["1-1024", str(base)]).start()
    procs.append(rportd)
    agent = Agent(tmp_path, rportd.url, "c1:secret", "--id", "alloc", remotes=("127.0.0.1:9",))
    procs.append(agent.start())
    agent.wait_log("new tunnel:")
    assert f"new tunnel: 0.0.0.0:{base + 2}:127.0.0.1:9" in agent.log_text()
    busy.close()


def _free(port: int) -> bool:
    try:
        socket.create_server(("0.0.0.0", port)).close()
        return True
    except OSError:
        return False


def test_restart_reconnects_agents_and_brings_tunnels_back(tmp_path: Path,
                                                          procs: list[object]) -> None:
    target = EchoTarget()
    rportd = single_auth(tmp_path).start()
    procs.append(rportd)
    agent = Agent(tmp_path, rportd.url, "c1:secret", "--id", "r1",
                  remotes=(f"127.0.0.1:{target.port}",))
    procs.append(agent.start())
    agent.wait_log("new tunnel:")
    tunnel = persisted_clients(own_db(tmp_path))["r1"]["tunnels"][0]
    rportd.stop()
    assert persisted_clients(own_db(tmp_path))["r1"]["disconnected_at"] is not None
    rportd.start()
    agent.wait_connected(2)
    again = persisted_clients(own_db(tmp_path))["r1"]["tunnels"]
    assert [t["lport"] for t in again] == [tunnel["lport"]], "the random port came back"
    sent, echoed = carry(int(tunnel["lport"]), 1 << 20)
    assert sent == echoed
    target.close()


def test_refused_registration_keeps_the_clients_tunnels(tmp_path: Path,
                                                        procs: list[object]) -> None:
    from .helpers import http

    rportd = Rportd(tmp_path, {"server": {"auth": "c1:secret"},
                               "api": {"auth": "admin:foobaz"}}).start()
    procs.append(rportd)
    agent = Agent(tmp_path, rportd.url, "c1:secret", "--id", "keep")
    procs.append(agent.start())
    agent.wait_connected()
    made = http(rportd.api_port, "PUT", "/api/v1/clients/keep/tunnels?remote=22&check_port=0",
                basic=("admin", "foobaz"))
    assert made.status == 200, made.body
    agent.stop()
    wait_for(lambda: not connected(own_db(tmp_path), "keep"), what="keep disconnected")
    busy = socket.create_server(("127.0.0.1", 0))
    again = Agent(tmp_path, rportd.url, "c1:secret", "--id", "keep", name="busy",
                  remotes=(f"127.0.0.1:{busy.getsockname()[1]}:127.0.0.1:22",))
    procs.append(again.start())
    assert again.wait_exit() == 0
    assert "can't create tunnel" in again.log_text()
    busy.close()
    wait_for(lambda: persisted_clients(own_db(tmp_path))["keep"]["disconnected_at"],
             what="keep recorded as disconnected")
    kept = persisted_clients(own_db(tmp_path))["keep"]["tunnels"]
    assert [t["lport"] for t in kept] == [made.json()["data"]["lport"]]
