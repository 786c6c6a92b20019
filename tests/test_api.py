"""The API without tenancy: login and tokens, throttling, error shapes, tunnels end to end,
OpenAPI, TLS, access log and static files. Real rportd, real agents, real HTTP."""

from __future__ import annotations

import base64
import datetime
import json
import re
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest

from rportd.api.app import PERMISSION_KINDS, RESOURCES, ROUTES, served_openapi
from rportd.auth import passwords
from rportd.auth.passwords import VerifyCache, hash_password

from .helpers import free_port, http
from .processes import Agent, Rportd, port_open, wait_for
from .test_agents import EchoTarget, carry, closed_without_data


def _bcrypt(password: str, prefix: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode().replace("$2b$", prefix, 1)


USERS = [
    {"username": "admin", "password": _bcrypt("foobaz", "$2b$"), "groups": ["Administrators"]},
    {"username": "ann", "password": _bcrypt("ann-pw", "$2a$"), "groups": []},
    {"username": "yan", "password": _bcrypt("yan-pw", "$2y$"), "groups": []},
    {"username": "bob", "password": _bcrypt("bob-pw", "$2b$"), "groups": []},
]
ADMIN = ("admin", "foobaz")


class Server:
    def __init__(self, rportd: Rportd, agent: Agent):
        self.rportd, self.agent = rportd, agent

    def call(self, method: str, path: str, **kwargs: object) -> object:
        return http(self.rportd.api_port, method, path, **kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("api")
    (tmp / "users.json").write_text(json.dumps(USERS))
    (tmp / "www").mkdir()
    (tmp / "www" / "index.html").write_text("<h1>rportd</h1>")
    rportd = Rportd(tmp, {
        "server": {"auth": "c1:secret", "excluded_ports": ["1-1024"]},
        "api": {"auth_file": str(tmp / "users.json"), "doc_root": str(tmp / "www"),
                "access_log_file": str(tmp / "access.log")},
    }).start()
    agent = Agent(tmp, rportd.url, "c1:secret", "--id", "a1").start()
    agent.wait_connected()
    yield Server(rportd, agent)
    agent.stop()
    rportd.stop()


def test_seed_curl_lists_clients(server: Server) -> None:
    out = subprocess.run(["curl", "-s", "-u", "admin:foobaz",
                          f"http://localhost:{server.rportd.api_port}/api/v1/clients"],
                         capture_output=True, check=True, text=True).stdout
    data = json.loads(out)["data"]
    assert [c["id"] for c in data] == ["a1"]
    assert "tenant" not in data[0]  # rport's shape when multi_tenancy is off
    for key in ("name", "os", "os_arch", "os_family", "os_kernel", "hostname", "ipv4", "ipv6",
                "tags", "version", "address", "tunnels", "disconnected_at", "connection_state",
                "client_auth_id"):
        assert key in data[0]


@pytest.mark.parametrize("user, password", [("admin", "foobaz"), ("ann", "ann-pw"),
                                            ("yan", "yan-pw")])
def test_every_bcrypt_prefix_logs_in(server: Server, user: str, password: str) -> None:
    assert server.call("GET", "/api/v1/me", basic=(user, password)).status == 200


def _claims(token: str) -> dict[str, int]:
    body = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))


def test_login_logout_and_token_lifetimes(server: Server) -> None:
    token = server.call("GET", "/api/v1/login", basic=ADMIN).json()["data"]["token"]
    claims = _claims(token)
    assert claims["exp"] - claims["iat"] == 600
    assert server.call("GET", "/api/v1/me", token=token).json()["data"]["username"] == "admin"
    rport_style = server.call("GET", "/api/v1/me", headers={"Authorization": f"Bearer: {token}"})
    assert rport_style.status == 200
    long = server.call("GET", "/api/v1/login?token-lifetime=7776000", basic=ADMIN).json()
    assert _claims(long["data"]["token"])["exp"] - _claims(long["data"]["token"])["iat"] == 7776000
    for bad in ("0", "7776001", "soon"):
        assert server.call("GET", f"/api/v1/login?token-lifetime={bad}", basic=ADMIN).status == 400
    posted = server.call("POST", "/api/v1/login",
                         body=b'{"username": "admin", "password": "foobaz"}').json()
    form = server.call("POST", "/api/v1/login", body=b"username=admin&password=foobaz",
                       headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert posted["data"]["token"] and form.status == 200
    assert server.call("DELETE", "/api/v1/login", token=token).status == 204
    revoked = server.call("GET", "/api/v1/me", token=token)
    assert revoked.status == 401 and revoked.error_code == "ERR_CODE_TOKEN_REVOKED"
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    assert server.call("GET", "/api/v1/me", token=forged).error_code == "ERR_CODE_INVALID_TOKEN"


def test_failed_logins_are_throttled_per_user(server: Server) -> None:
    for _ in range(5):
        assert server.call("GET", "/api/v1/me", basic=("bob", "guess")).status == 401
    throttled = server.call("GET", "/api/v1/me", basic=("bob", "bob-pw"))
    assert throttled.status == 429 and throttled.error_code == "ERR_CODE_TOO_MANY_REQUESTS"
    assert server.call("GET", "/api/v1/me", basic=ADMIN).status == 200  # others unaffected


def test_errors_have_rports_shape(server: Server) -> None:
    anonymous = server.call("GET", "/api/v1/clients")
    assert anonymous.status == 401 and anonymous.headers["WWW-Authenticate"].startswith("Basic")
    assert anonymous.json()["errors"][0].keys() == {"code", "title", "detail"}
    unknown = server.call("GET", "/api/v1/nothing-here", basic=ADMIN)
    assert unknown.status == 404 and unknown.error_code == "ERR_CODE_NOT_FOUND"
    huge = server.call("POST", "/api/v1/login", body=b"{" + b" " * 20000 + b"}")
    assert huge.status == 413 and huge.json()["errors"][0]["code"] == "ERR_CODE_REQUEST_TOO_LARGE"
    missing = server.call("GET", "/api/v1/clients/nope", basic=ADMIN)
    assert missing.status == 404 and missing.error_code == "ERR_CODE_CLIENT_NOT_FOUND"
    connected = server.call("DELETE", "/api/v1/clients/a1", basic=ADMIN)
    assert connected.status == 400 and connected.error_code == "ERR_CODE_CLIENT_CONNECTED"
    readonly = server.call("POST", "/api/v1/clients-auth", basic=ADMIN,
                           body=b'{"id": "n", "password": "12345678"}')
    assert readonly.status == 405 and readonly.error_code == "ERR_CODE_CLIENT_AUTH_RO"


def test_tunnel_through_the_api_carries_bytes_and_closes(server: Server) -> None:
    target = EchoTarget()
    made = server.call("PUT", f"/api/v1/clients/a1/tunnels?remote=127.0.0.1:{target.port}"
                              "&local=127.0.0.1:0&scheme=raw", basic=ADMIN)
    assert made.status == 400  # port 0 is not a port
    made = server.call("PUT", f"/api/v1/clients/a1/tunnels?remote=127.0.0.1:{target.port}",
                       basic=ADMIN)
    assert made.status == 200, made.body
    tunnel = made.json()["data"]
    assert tunnel["lport_random"] is True and tunnel["rport"] == str(target.port)
    lport = int(tunnel["lport"])
    sent, echoed = carry(lport, 5 << 20)
    assert sent == echoed == target.received.hexdigest()
    listed = server.call("GET", "/api/v1/clients/a1", basic=ADMIN).json()["data"]["tunnels"]
    assert tunnel["id"] in [t["id"] for t in listed]
    assert server.call("DELETE", f"/api/v1/clients/a1/tunnels/{tunnel['id']}",
                       basic=ADMIN).status == 204
    wait_for(lambda: not port_open(lport), what="tunnel port closed")
    target.close()


def test_tunnel_errors(server: Server) -> None:
    closed = free_port()
    refused = server.call("PUT", f"/api/v1/clients/a1/tunnels?remote={closed}", basic=ADMIN)
    assert refused.status == 400 and refused.error_code == "ERR_CODE_REMOTE_PORT_CLOSED"
    assert "connection refused" in refused.json()["errors"][0]["detail"]
    busy = socket.create_server(("127.0.0.1", 0))
    in_use = server.call("PUT", f"/api/v1/clients/a1/tunnels?remote=22&check_port=0"
                                f"&local=127.0.0.1:{busy.getsockname()[1]}", basic=ADMIN)
    busy.close()
    assert in_use.status == 409 and in_use.error_code == "ERR_CODE_LOCAL_PORT_IN_USE"
    excluded = server.call("PUT", "/api/v1/clients/a1/tunnels?remote=22&local=80&check_port=0",
                           basic=ADMIN)
    assert excluded.status == 400 and excluded.error_code == "ERR_CODE_LOCAL_PORT_EXCLUDED"
    no_remote = server.call("PUT", "/api/v1/clients/a1/tunnels", basic=ADMIN)
    assert no_remote.status == 400
    bad_acl = server.call("PUT", "/api/v1/clients/a1/tunnels?remote=22&check_port=0&acl=nope",
                          basic=ADMIN)
    assert bad_acl.status == 400 and bad_acl.error_code == "ERR_CODE_INVALID_ACL"


def test_tunnel_acl_through_the_api(server: Server) -> None:
    target = EchoTarget()
    denied = server.call("PUT", f"/api/v1/clients/a1/tunnels?remote={target.port}"
                                "&acl=10.0.0.0/8,fd00::/8", basic=ADMIN).json()["data"]
    allowed = server.call("PUT", f"/api/v1/clients/a1/tunnels?remote={target.port}"
                                 "&acl=192.0.2.1,127.0.0.0/24", basic=ADMIN).json()["data"]
    assert closed_without_data(int(denied["lport"]))
    with socket.create_connection(("127.0.0.1", int(allowed["lport"])), timeout=5) as conn:
        conn.sendall(b"hello")
        assert conn.recv(10) == b"hello"
    for tunnel in (denied, allowed):
        server.call("DELETE", f"/api/v1/clients/a1/tunnels/{tunnel['id']}", basic=ADMIN)
    target.close()


def test_openapi_describes_exactly_the_routes(server: Server) -> None:
    spec = server.call("GET", "/api/v1/openapi.json").json()
    assert spec == json.loads(json.dumps(served_openapi()))
    documented = {(method.upper(), path) for path, ops in spec["paths"].items() for method in ops}
    routed = {(route.method, route.path) for route in ROUTES}
    assert documented == routed


def test_access_log_is_combined_log_format(server: Server) -> None:
    server.call("GET", "/api/v1/status", basic=ADMIN, headers={"User-Agent": "curl/8.0"})
    log = server.rportd.tmp / "access.log"
    pattern = re.compile(r'^127\.0\.0\.1 - - \[[^\]]+\] "GET /api/v1/status HTTP/1\.1" 200 \d+ '
                         r'"-" "curl/8\.0"$')
    wait_for(lambda: log.exists() and any(pattern.match(line)
                                          for line in log.read_text().splitlines()),
             what="a combined-format line in the access log")
    assert "foobaz" not in log.read_text()


def test_access_log_redacts_the_query_token_however_it_is_encoded(server: Server) -> None:
    """aiohttp decodes the query's keys, so `access%5Ftoken` authenticates like `access_token`;
    the access log shows the raw request line and must hide the value either way."""
    token = server.call("GET", "/api/v1/login", basic=ADMIN).json()["data"]["token"]
    for key in ("access%5Ftoken", "access%5ftoken", "%61ccess_token"):
        answer = server.call("GET", f"/api/v1/ws/commands?x=1&{key}={token}")
        assert answer.status == 400 and answer.error_code == "ERR_CODE_NOT_WEBSOCKET"
    log = server.rportd.tmp / "access.log"
    wait_for(lambda: log.read_text().count("/api/v1/ws/commands?x=1&") == 3,
             what="the three requests in the access log")
    assert token not in log.read_text()


def test_doc_root_is_served(server: Server) -> None:
    page = server.call("GET", "/index.html")
    assert page.status == 200 and page.body == b"<h1>rportd</h1>"
    assert server.call("GET", "/").body == b"<h1>rportd</h1>"
    for escape in ("/..%2f..%2f..%2fetc/passwd", "/%2e%2e/%2e%2e/etc/passwd"):
        assert server.call("GET", escape).status == 404
    post = server.call("POST", "/api/v1/clients", basic=ADMIN)
    assert post.status == 405 and post.error_code == "ERR_CODE_METHOD_NOT_ALLOWED"


def test_tls_api(tmp_path: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    rportd = Rportd(tmp_path, {"server": {"auth": "c1:secret"},
                               "api": {"auth": "admin:foobaz", "cert_file": str(tmp_path / "cert.pem"),
                                       "key_file": str(tmp_path / "key.pem")}}).start()
    try:
        answer = http(rportd.api_port, "GET", "/api/v1/status", basic=ADMIN, tls=True)
        assert answer.status == 200
    finally:
        rportd.stop()


# ---------------------------------------------------------------- table users, no tenancy


def test_table_users_password_change_and_auth_write(tmp_path: Path) -> None:
    db = tmp_path / "auth.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE clients_auth (id TEXT PRIMARY KEY, password TEXT)")
        conn.execute("CREATE TABLE users (username TEXT UNIQUE, password TEXT)")
        conn.execute("CREATE TABLE groups (username TEXT, \"group\" TEXT)")
        conn.execute("INSERT INTO users VALUES ('ops', ?)", (_bcrypt("old-pw", "$2b$"),))
    rportd = Rportd(tmp_path, {
        "server": {"auth_table": "clients_auth", "auth_write": False},
        "api": {"auth_user_table": "users", "auth_group_table": "groups"},
        "database": {"db_type": "sqlite", "db_name": str(db)}})
    # the configured database needs rportd's own tables: the operator runs `rportd migrate`
    subprocess.run([sys.executable, "-m", "rportd.cli", "migrate", "-c", str(rportd.config)],
                   check=True,
                   capture_output=True)
    rportd.start()
    try:
        port = rportd.api_port
        assert http(port, "GET", "/api/v1/me", basic=("ops", "old-pw")).status == 200
        assert http(port, "GET", "/api/v1/me", basic=("ops", "old-pw")).status == 200
        with sqlite3.connect(db) as conn:
            conn.execute("UPDATE users SET password = ? WHERE username = 'ops'",
                         (_bcrypt("new-pw", "$2b$"),))
        assert http(port, "GET", "/api/v1/me", basic=("ops", "old-pw")).status == 401
        assert http(port, "GET", "/api/v1/me", basic=("ops", "new-pw")).status == 200
        readonly = http(port, "POST", "/api/v1/clients-auth", basic=("ops", "new-pw"),
                        body=b'{"id": "c9", "password": "12345678"}')
        assert readonly.status == 405 and readonly.error_code == "ERR_CODE_CLIENT_AUTH_RO"
    finally:
        rportd.stop()


async def test_repeated_basic_auth_costs_one_bcrypt(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = passwords._verify_blocking

    def counting(password: str, stored: str) -> bool:
        calls.append(stored)
        return real(password, stored)

    monkeypatch.setattr(passwords, "_verify_blocking", counting)
    cache = VerifyCache()
    stored = hash_password("pw", rounds=4)
    assert all([await cache.verify("pw", stored) for _ in range(20)])
    assert len(calls) == 1
    assert not await cache.verify("other", stored)  # a wrong password is never cached
    changed = hash_password("pw", rounds=4)
    assert await cache.verify("pw", changed) and len(calls) == 3  # a changed hash checks again


def test_every_route_names_a_known_permission() -> None:
    for route in ROUTES:
        if route.permission in PERMISSION_KINDS:
            continue
        resource, _, access = route.permission.partition(":")
        assert resource in RESOURCES and access in ("read", "write"), route
        runs_commands = route.path == "/api/v1/ws/commands"  # a GET only for the upgrade
        assert (access == "read") == (route.method == "GET" and not runs_commands), route
