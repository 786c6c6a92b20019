"""rport's documented command lines, run as written on real rportd and rport processes: the quick
start, a table-auth one (SQLite and MariaDB) and a TLS one; then the API lists the agent."""

from __future__ import annotations

import datetime
import http.client as httpclient
import ipaddress
import json
import os
import re
import socket
import sqlite3
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest

from .conftest import MYSQL_HOST, MYSQL_PASSWORD, MYSQL_PORT, MYSQL_USER, mysql_execute
from .helpers import free_port, http
from .processes import AgentCommand, RportdCommand, wait_for
from .test_agents import EchoTarget

# rport's quick start runs as an ordinary user; these tests may run as root, so the environment
# lifts the root rule and the command line stays rport's, flag for flag.
ROOT_ENV = {"RPORTD_SERVER_ALLOW_ROOT": "true"} if os.geteuid() == 0 else {}


def listed(api_port: int, user: tuple[str, str], client_id: str, tls: bool = False) -> bool:
    response = http(api_port, "GET", "/api/v1/clients", basic=user, tls=tls)
    return response.status == 200 and client_id in {c["id"] for c in response.json()["data"]}


def test_rports_quick_start_works_as_written(tmp_path: Path, procs: list[object]) -> None:
    agent_port, api_port = free_port(), free_port()
    rportd = RportdCommand(tmp_path, [
        "--addr", f"127.0.0.1:{agent_port}", "--api-addr", f"127.0.0.1:{api_port}",
        "--api-auth", "admin:foobaz", "--auth", "clientAuth1:1234",
        "--data-dir", str(tmp_path / "var-lib-rport")], (agent_port, api_port), ROOT_ENV)
    procs.append(rportd.start())
    agent = AgentCommand(tmp_path, ["--auth", "clientAuth1:1234", "--id", "my-vm", "--allow-root",
                                    "--log-level", "info", f"127.0.0.1:{agent_port}"])
    procs.append(agent.start())
    agent.wait_connected()  # --log-level info reached the agent: it logs the connection
    # curl -s -u admin:foobaz http://localhost:3000/api/v1/clients
    wait_for(lambda: listed(api_port, ("admin", "foobaz"), "my-vm"), what="my-vm listed")
    assert (tmp_path / "var-lib-rport" / "rportd_host_key").exists()
    assert http(api_port, "GET", "/api/v1/clients", basic=("admin", "wrong")).status == 401


def _echo_through(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(b"ping through the tunnel")
        return conn.recv(1024)


@pytest.fixture
def target() -> Iterator[EchoTarget]:
    echo = EchoTarget()
    yield echo
    echo.close()


def test_rports_readme_command_lines_key_fingerprint_tags_and_a_tunnel(
        tmp_path: Path, procs: list[object], target: EchoTarget) -> None:
    """rport's README: `rportd --log-level info --data-dir /var/tmp/ --key $KEY --auth
    clientAuth1:1234`, then `rport --id my-client-1 --fingerprint <FP> --tag Linux --tag "Office
    Berlin" --name "My Test VM" --auth clientAuth1:1234 <server> <tunnel>`."""
    agent_port, api_port, tunnel_port = free_port(), free_port(), free_port()
    rportd = RportdCommand(tmp_path, [
        "--log-level", "info", "--data-dir", str(tmp_path / "var-tmp"), "--key", "0123456789abcdef",
        "--auth", "clientAuth1:1234", "--addr", f"127.0.0.1:{agent_port}",
        "--api-addr", f"127.0.0.1:{api_port}", "--api-auth", "admin:foobaz"],
        (agent_port, api_port), ROOT_ENV)
    procs.append(rportd.start())
    found = wait_for(lambda: re.search(r"host key fingerprint (\S+)", rportd.log_text()),
                     what="the fingerprint in rportd's log")
    agent = AgentCommand(tmp_path, [
        "--id", "my-client-1", "--fingerprint", found.group(1), "--tag", "Linux",
        "--tag", "Office Berlin", "--name", "My Test VM", "--auth", "clientAuth1:1234",
        "--allow-root", "--log-level", "info", f"127.0.0.1:{agent_port}",
        f"127.0.0.1:{tunnel_port}:127.0.0.1:{target.port}"])
    procs.append(agent.start())
    agent.wait_connected()
    clients = http(api_port, "GET", "/api/v1/clients", basic=("admin", "foobaz")).json()["data"]
    assert [(c["id"], c["name"], c["tags"]) for c in clients] == [
        ("my-client-1", "My Test VM", ["Linux", "Office Berlin"])]
    assert _echo_through(tunnel_port) == b"ping through the tunnel"


def _hash(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()


def _migrate(tmp_path: Path, db_flags: list[str]) -> None:
    result = subprocess.run([sys.executable, "-m", "rportd.cli", "migrate", *db_flags],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60,
                            env={k: v for k, v in os.environ.items() if not k.startswith("RPORTD_")})
    assert result.returncode == 0 and "applied 0001_auth_tables" in result.stdout, result.stderr


ROWS = ("INSERT INTO clients_auth (id, password, tenant) VALUES ('tbl1', '{c}', '')",
        "INSERT INTO users (username, password, tenant) VALUES ('ops', '{u}', '')",
        "INSERT INTO `groups` (username, `group`, tenant) VALUES ('ops', 'Administrators', '')")


def _table_auth_run(tmp_path: Path, procs: list[object], db_flags: list[str]) -> None:
    agent_port, api_port = free_port(), free_port()
    rportd = RportdCommand(tmp_path, [
        "--addr", f"127.0.0.1:{agent_port}", "--api-addr", f"127.0.0.1:{api_port}",
        "--auth-table", "clients_auth", "--api-auth-user-table", "users",
        "--api-auth-group-table", "groups", *db_flags, "--data-dir", str(tmp_path / "data"),
        "--log-level", "info"], (agent_port, api_port), ROOT_ENV)
    procs.append(rportd.start())
    agent = AgentCommand(tmp_path, ["--auth", "tbl1:client-pw", "--id", "tbl-vm", "--allow-root",
                                    "--log-level", "info", f"127.0.0.1:{agent_port}"])
    procs.append(agent.start())
    wait_for(lambda: listed(api_port, ("ops", "ops-pw"), "tbl-vm"), what="tbl-vm listed")


def test_table_auth_command_line_on_sqlite(tmp_path: Path, procs: list[object]) -> None:
    db = tmp_path / "rport.db"
    db_flags = ["--db-type", "sqlite", "--db-name", str(db)]
    _migrate(tmp_path, db_flags)
    with sqlite3.connect(db) as conn:
        for row in ROWS:
            conn.execute(row.replace("`", '"').format(c=_hash("client-pw"), u=_hash("ops-pw")))
    _table_auth_run(tmp_path, procs, db_flags)


@pytest.mark.mysql
def test_table_auth_command_line_on_mariadb(tmp_path: Path, procs: list[object],
                                            mysql_db: str) -> None:
    db_flags = ["--db-type", "mysql", "--db-host", f"{MYSQL_HOST}:{MYSQL_PORT}",
                "--db-user", MYSQL_USER, "--db-password", MYSQL_PASSWORD, "--db-name", mysql_db]
    _migrate(tmp_path, db_flags)
    mysql_execute(mysql_db, *(row.format(c=_hash("client-pw"), u=_hash("ops-pw")) for row in ROWS))
    _table_auth_run(tmp_path, procs, db_flags)


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = tmp_path / "api.crt", tmp_path / "api.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


def test_tls_command_line_with_a_self_signed_certificate(tmp_path: Path,
                                                        procs: list[object]) -> None:
    cert_file, key_file = _self_signed(tmp_path)
    agent_port, api_port = free_port(), free_port()
    rportd = RportdCommand(tmp_path, [
        "-a", f"127.0.0.1:{agent_port}", "--api-addr", f"127.0.0.1:{api_port}",
        "--api-auth", "admin:foobaz", "--auth", "c1:pw", "--data-dir", str(tmp_path / "data"),
        "--api-cert-file", str(cert_file), "--api-key-file", str(key_file),
        "--save-clients-interval", "1s", "--proxy", "http://127.0.0.1:1"],
        (agent_port, api_port), ROOT_ENV)
    procs.append(rportd.start())
    procs.append(AgentCommand(tmp_path, ["--auth", "c1:pw", "--id", "tls-vm", "--allow-root",
                                         f"127.0.0.1:{agent_port}"]).start())
    context = ssl.create_default_context(cafile=str(cert_file))  # verified, not merely accepted

    def listed_over_tls() -> bool:
        conn = httpclient.HTTPSConnection("127.0.0.1", api_port, timeout=10, context=context)
        try:
            conn.request("GET", "/api/v1/clients", headers={
                "Authorization": "Basic YWRtaW46Zm9vYmF6"})  # admin:foobaz
            data = json.loads(conn.getresponse().read())["data"]
        finally:
            conn.close()
        return any(client["id"] == "tls-vm" for client in data)

    wait_for(listed_over_tls, what="tls-vm listed over verified TLS")
    warnings = [line for line in rportd.log_text().splitlines() if "warning" in line]
    assert warnings == ["rportd: warning: --save-clients-interval, --proxy: rport flags rportd "
                        "does not need, ignored"]
