"""Tenants as records, end to end on a real rportd (SQLite and MariaDB): an operator installs two
tenants through the API, their admins create credentials, real agents connect, the subdomain
binds requests (API and agent port) to a tenant, quotas refuse what is over them, and deleting a
tenant leaves nothing behind in any table."""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pymysql
import pytest

from rportd.client.connection import AgentSettings, RetryableError, connect_once
from rportd.client.websocket import ServerAddress

from .api_world import create_mysql_database, drop_mysql_database
from .conftest import MYSQL_HOST, MYSQL_PASSWORD, MYSQL_PORT, MYSQL_USER, require_mysql
from .helpers import Response, free_port, http, run_rportd, write_config
from .processes import Agent, Rportd, wait_for

KEY = "operator-key-" + "k" * 40
DOMAIN = "rport.test"
PASSWORDS = {"ann": "ann-password-1", "ben": "ben-password-2"}


@dataclass
class Site:
    rportd: Rportd
    kind: str
    database: dict[str, object]
    agents: list[Agent]
    tmp: Path
    conn: Any = None

    def op(self, method: str, path: str, body: Any = None, key: str = KEY,
           host: str = DOMAIN) -> Response:
        """The operator, on the bare domain."""
        data = json.dumps(body).encode() if body is not None else None
        return http(self.rportd.api_port, method, path, token=key, body=data,
                    headers={"Host": host})

    def user(self, method: str, path: str, user: str, tenant: str, body: Any = None,
             password: str | None = None, token: str | None = None) -> Response:
        """A tenant user, on a tenant's subdomain."""
        data = json.dumps(body).encode() if body is not None else None
        basic = None if token else (user, password or PASSWORDS[user])
        return http(self.rportd.api_port, method, path, basic=basic, token=token, body=data,
                    headers={"Host": f"{tenant}.{DOMAIN}"})

    def sql(self, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if self.kind == "sqlite":
            with sqlite3.connect(str(self.database["db_name"])) as conn:
                return conn.execute(statement, params).fetchall()
        if self.conn is None:  # one connection for the module: connecting costs more than a query
            self.conn = pymysql.connect(host=MYSQL_HOST, port=MYSQL_PORT, user=MYSQL_USER,
                                        password=MYSQL_PASSWORD, autocommit=True,
                                        database=str(self.database["db_name"]))
        with self.conn.cursor() as cursor:
            cursor.execute(statement.replace("?", "%s"), params)
            return list(cursor.fetchall())

    def tables(self) -> list[str]:
        if self.kind == "sqlite":
            return [r[0] for r in self.sql("SELECT name FROM sqlite_master WHERE type = 'table' "
                                           "AND name NOT LIKE 'sqlite_%'")]
        return [r[0] for r in self.sql("SHOW TABLES")]

    def agent(self, auth: str, client_id: str) -> Agent:
        agent = Agent(self.tmp, self.rportd.url, auth, "--id", client_id, "--max-retry-interval", "1s",
                      name=f"agent-{client_id}-{len(self.agents)}").start()
        self.agents.append(agent)
        return agent


@pytest.fixture(scope="module", params=["sqlite", pytest.param("mysql", marks=pytest.mark.mysql)])
def site(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp(f"tenants-{request.param}")
    if request.param == "sqlite":
        database: dict[str, object] = {"db_type": "sqlite", "db_name": str(tmp / "rportd.db")}
    else:
        require_mysql().close()
        database = {"db_type": "mysql", "db_host": f"{MYSQL_HOST}:{MYSQL_PORT}",
                    "db_user": MYSQL_USER, "db_password": MYSQL_PASSWORD,
                    "db_name": create_mysql_database()}
    migrate = write_config(tmp / "migrate.conf", {"server": {"allow_root": True,
                                                             "data_dir": str(tmp / "data")},
                                                  "database": database})
    assert run_rportd(["migrate", "-c", str(migrate)], tmp).returncode == 0
    rportd = Rportd(tmp, {
        "server": {"auth_table": "clients_auth", "multi_tenancy": True,
                   "max_failed_login": 100},
        "api": {"auth_user_table": "users", "auth_group_table": "groups",
                "operator_key": KEY, "tenant_domain": DOMAIN},
        "database": database})
    built = Site(rportd, "sqlite" if request.param == "sqlite" else "mysql", database, [], tmp)
    # a tenant only an operator's own table names, and a credential without a tenant
    built.sql("INSERT INTO users (username, password, tenant) VALUES (?, ?, ?)",
              ("old", "old-password", "legacy"))
    built.sql("INSERT INTO clients_auth (id, password, tenant) VALUES (?, ?, ?)",
              ("orphan", "orphan-secret", ""))
    rportd.start()
    try:
        _populate(built)
        yield built
    finally:
        for agent in built.agents:
            agent.stop()
        rportd.stop()
        if built.conn is not None:
            built.conn.close()
        if built.kind == "mysql":
            drop_mysql_database(str(database["db_name"]))


def install(site: Site, name: str, username: str) -> Response:
    return site.op("POST", "/api/v1/tenants/install",
                   {"name": name, "username": username, "password": PASSWORDS[username]})


def credential(site: Site, tenant: str, user: str, auth_id: str, password: str) -> str:
    made = site.user("POST", "/api/v1/clients-auth", user, tenant,
                     {"id": auth_id, "password": password})
    assert made.status == 201, made.body
    return str(made.json()["data"]["id"])


def client_state(site: Site, tenant: str, user: str, client_id: str) -> str:
    answer = site.user("GET", f"/api/v1/clients/{client_id}", user, tenant)
    return str(answer.json()["data"]["connection_state"]) if answer.status == 200 else ""


# ---------------------------------------------------------------- install and agents


def _populate(site: Site) -> None:
    """Through the API only: the operator installs two tenants, each admin creates a credential,
    an agent connects with each (and one with a credential that has no tenant)."""
    for name, admin in (("acme", "ann"), ("beta", "ben")):
        made = install(site, name, admin)
        assert made.status == 201, made.body
        assert made.json()["data"]["name"] == name and made.json()["data"]["recorded"]
    acme_id = credential(site, "acme", "ann", "a1", "acme-agent-pw")
    beta_id = credential(site, "beta", "ben", "b1", "beta-agent-pw")
    agents = [site.agent(f"{acme_id}:acme-agent-pw", "web1"),
              site.agent(f"{beta_id}:beta-agent-pw", "db1"),
              site.agent("orphan:orphan-secret", "lost1")]
    for agent in agents:
        agent.wait_connected()


def test_install_two_tenants_and_connect_their_agents(site: Site) -> None:
    for name, admin in (("acme", "ann"), ("beta", "ben")):
        me = site.user("GET", "/api/v1/me", admin, name).json()["data"]
        assert (me["tenant"], me["groups"]) == (name, ["Administrators"])
    assert site.sql("SELECT tenant, permissions FROM group_permissions ORDER BY tenant") == \
        [("acme", '["*"]'), ("beta", '["*"]')]
    assert [c["id"] for c in site.user("GET", "/api/v1/clients", "ann", "acme")
            .json()["data"]] == ["web1"]
    listed = {t["name"]: t for t in site.op("GET", "/api/v1/tenants").json()["data"]}
    assert sorted(listed) == ["acme", "beta", "legacy"]
    assert not listed["legacy"]["recorded"] and listed["legacy"]["usage"]["users"] == 1
    usage = listed["acme"]["usage"]
    assert (usage["clients_connected"], usage["credentials"], usage["users"]) == (1, 1, 1)
    status = site.op("GET", "/api/v1/operator/status").json()["data"]
    assert (status["orphaned_clients_connected"], status["clients_connected"]) == (1, 3)


def test_the_operators_writes_are_audited_in_no_tenants_log(site: Site) -> None:
    def operator_entries() -> list[dict[str, Any]]:
        answer = site.op("GET", "/api/v1/operator/auditlog?filter[username]=operator")
        assert answer.status == 200, answer.body
        return list(answer.json()["data"])

    wait_for(lambda: any(e["action"] == "POST /api/v1/tenants/install" and e["tenant"] == ""
                         for e in operator_entries()), what="the operator's install audited")
    dump = json.dumps(operator_entries())
    assert all(secret not in dump for secret in (PASSWORDS["ann"], PASSWORDS["ben"], KEY))
    mine = site.user("GET", "/api/v1/auditlog?filter[username]=operator", "ann", "acme")
    assert mine.status == 200 and mine.json()["data"] == []
    on_subdomain = site.user("GET", "/api/v1/operator/auditlog", "ann", "acme")
    assert on_subdomain.status == 421  # operator routes live on the bare domain only
    as_user = http(site.rportd.api_port, "GET", "/api/v1/operator/auditlog",
                   basic=("ann", PASSWORDS["ann"]), headers={"Host": DOMAIN})
    assert (as_user.status, as_user.error_code) == (401, "ERR_CODE_OPERATOR_KEY_REQUIRED")


def test_install_refuses_taken_names_and_bad_input(site: Site) -> None:
    again = install(site, "acme", "ann")
    assert (again.status, again.error_code) == (409, "ERR_CODE_TENANT_EXISTS")
    taken = site.op("POST", "/api/v1/tenants/install",
                    {"name": "gamma", "username": "ben", "password": "whatever-pw"})
    assert (taken.status, taken.error_code) == (409, "ERR_CODE_USERNAME_TAKEN")
    assert site.op("GET", "/api/v1/tenants/gamma").status == 404  # nothing half-made
    for body, code in (({"name": "Bad Name", "username": "x1", "password": "password1"},
                        "ERR_CODE_INVALID_TENANT"),
                       ({"name": "UPPER", "username": "x1", "password": "password1"},
                        "ERR_CODE_INVALID_TENANT"),  # not a DNS label with tenant_domain
                       ({"name": "ok", "username": "x1"}, "ERR_CODE_INVALID_PASSWORD"),
                       ({"name": "ok", "username": "a:b", "password": "password1"},
                        "ERR_CODE_INVALID_USERNAME")):
        bad = site.op("POST", "/api/v1/tenants/install", body)
        assert (bad.status, bad.error_code) == (400, code), bad.body
    for path, body, code in (("/api/v1/tenants", {"name": "x" * 51}, "ERR_CODE_INVALID_TENANT"),
                             ("/api/v1/tenants", {"name": "q", "quotas": {"disk": 1}},
                              "ERR_CODE_INVALID_QUOTA"),
                             ("/api/v1/tenants", [1], "ERR_CODE_INVALID_REQUEST")):
        bad = site.op("POST", path, body)
        assert (bad.status, bad.error_code) == (400, code), bad.body
    bad = site.op("PATCH", "/api/v1/tenants/acme", {"quotas": {"clients": -1}})
    assert (bad.status, bad.error_code) == (400, "ERR_CODE_INVALID_QUOTA")
    bad = site.op("DELETE", "/api/v1/tenants/acme?force=maybe")
    assert (bad.status, bad.error_code) == (400, "ERR_CODE_INVALID_REQUEST")
    for name in ("x" * 51, "no%20such", "%C3%A9"):
        missing = site.op("GET", f"/api/v1/tenants/{name}")
        assert (missing.status, missing.error_code) == (404, "ERR_CODE_TENANT_NOT_FOUND")
    not_json = http(site.rportd.api_port, "POST", "/api/v1/tenants", token=KEY, body=b"{",
                    headers={"Host": DOMAIN})
    assert (not_json.status, not_json.error_code) == (400, "ERR_CODE_INVALID_REQUEST")


def test_an_unrecorded_tenant_gains_a_record_with_quotas(site: Site) -> None:
    patched = site.op("PATCH", "/api/v1/tenants/legacy", {"quotas": {"users": 5}})
    assert patched.status == 200, patched.body
    data = patched.json()["data"]
    assert data["recorded"] and data["quotas"] == {"users": 5}
    assert data["quota_usage"]["users"] == {"used": 1, "quota": 5}


# ---------------------------------------------------------------- the operator key


def test_operator_key_wrong_or_missing_is_refused(site: Site) -> None:
    for key in ("", KEY + "x", KEY[:-1]):
        refused = site.op("GET", "/api/v1/tenants", key=key) if key else \
            http(site.rportd.api_port, "GET", "/api/v1/tenants", headers={"Host": DOMAIN})
        assert (refused.status, refused.error_code) == (401, "ERR_CODE_OPERATOR_KEY_REQUIRED")
    as_user = http(site.rportd.api_port, "GET", "/api/v1/tenants", basic=("ann",
                   PASSWORDS["ann"]), headers={"Host": DOMAIN})
    assert as_user.status == 401
    metrics = http(site.rportd.api_port, "GET", "/metrics", headers={"Host": DOMAIN})
    assert metrics.status == 401
    assert KEY not in site.rportd.log_text()


def test_operator_key_reaches_no_tenant_endpoint(site: Site) -> None:
    for path in ("/api/v1/clients", "/api/v1/clients/web1", "/api/v1/clients-auth",
                 "/api/v1/status", "/api/v1/me"):
        for host in (DOMAIN, f"acme.{DOMAIN}", "127.0.0.1"):
            refused = site.op("GET", path, host=host)
            assert refused.status in (403, 421), (path, host, refused.body)
            assert b"web1" not in refused.body
    plain = site.op("GET", "/api/v1/clients", host="127.0.0.1")
    assert (plain.status, plain.error_code) == (421, "ERR_CODE_MISDIRECTED_REQUEST")
    on_subdomain = site.op("GET", "/api/v1/tenants", host=f"acme.{DOMAIN}")
    assert (on_subdomain.status, on_subdomain.error_code) == (421, "ERR_CODE_MISDIRECTED_REQUEST")
    assert site.op("GET", "/api/v1/tenants", host=f"{DOMAIN}:443").status == 200  # a port is fine


def test_short_operator_key_refuses_to_start(tmp_path: Path) -> None:
    config = write_config(tmp_path / "short.conf", {
        "server": {"allow_root": True, "data_dir": str(tmp_path / "d"),
                   "address": f"127.0.0.1:{free_port()}"},
        "api": {"address": f"127.0.0.1:{free_port()}", "auth": "a:b", "operator_key": "short"}})
    result = run_rportd(["-c", str(config)], tmp_path)
    assert result.returncode == 1 and "[api] operator_key" in result.stderr
    assert "short" not in result.stderr.replace("[api] operator_key", "")
    assert "AUDIT-BIND" not in result.stderr
    del_key = write_config(tmp_path / "env.conf", {
        "server": {"allow_root": True, "data_dir": str(tmp_path / "d")},
        "api": {"address": f"127.0.0.1:{free_port()}", "auth": "a:b"}})
    result = run_rportd(["-c", str(del_key)], tmp_path, env={"RPORTD_API_OPERATOR_KEY": "x" * 31})
    assert result.returncode == 1 and "RPORTD_API_OPERATOR_KEY" in result.stderr


# ---------------------------------------------------------------- the subdomain


def _timed(call: Any) -> tuple[float, Response]:
    started = time.monotonic()
    answer = call()
    return time.monotonic() - started, answer


def test_user_of_another_tenant_is_refused_like_a_wrong_password(site: Site) -> None:
    assert site.user("GET", "/api/v1/clients", "ben", "beta").status == 200  # now cached
    wrong_pw_time, wrong_pw = _timed(lambda: site.user("GET", "/api/v1/clients", "ann", "acme",
                                                       password="not-her-password"))
    other_time, other = _timed(lambda: site.user("GET", "/api/v1/clients", "ben", "acme"))
    assert other.status == wrong_pw.status == 401
    assert other.body == wrong_pw.body
    # a cached right password answers in milliseconds; refused here, it costs a dummy bcrypt
    assert other_time > 0.4 * wrong_pw_time, (other_time, wrong_pw_time)
    token = str(site.user("GET", "/api/v1/login", "ben", "beta").json()["data"]["token"])
    theirs = site.user("GET", "/api/v1/clients", "", "acme", token=token)
    garbage = site.user("GET", "/api/v1/clients", "", "acme", token=token[:-4] + "AAAA")
    assert theirs.status == garbage.status == 401 and theirs.body == garbage.body
    login = http(site.rportd.api_port, "POST", "/api/v1/login", headers={
        "Host": f"acme.{DOMAIN}"}, body=json.dumps({"username": "ben",
                                                     "password": PASSWORDS["ben"]}).encode())
    assert login.status == 401
    bare = http(site.rportd.api_port, "GET", "/api/v1/clients", basic=("ann", PASSWORDS["ann"]),
                headers={"Host": DOMAIN})
    assert (bare.status, bare.error_code) == (421, "ERR_CODE_MISDIRECTED_REQUEST")
    for public in ("/api/v1/health", "/api/v1/openapi.json"):
        assert http(site.rportd.api_port, "GET", public, headers={"Host": DOMAIN}).status == 200


def test_a_request_without_host_names_no_tenant(site: Site) -> None:
    with socket.create_connection(("127.0.0.1", site.rportd.api_port), timeout=10) as conn:
        conn.sendall(b"GET /api/v1/clients HTTP/1.0\r\nAuthorization: Basic YW5uOng=\r\n\r\n")
        answer = b""
        while chunk := conn.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.0 421") or answer.startswith(b"HTTP/1.1 421"), answer


class _Hosted(ServerAddress):
    """Dials 127.0.0.1 but says another Host, as an agent behind DNS would."""

    @property
    def host_header(self) -> str:
        return f"acme.{DOMAIN}:{self.port}"


def _agent_login(site: Site, auth: str) -> str:
    auth_id, _, password = auth.partition(":")
    settings = AgentSettings(_Hosted("127.0.0.1", site.rportd.agent_port, "/", False), auth_id,
                             password, client_id="hosted")

    async def attempt() -> str:
        try:
            conn, _ = await connect_once(settings)
        except RetryableError as exc:
            return str(exc)
        conn.close()
        return "connected"

    return asyncio.run(asyncio.wait_for(attempt(), 30))


def test_agent_of_another_tenant_is_refused_on_the_subdomain(site: Site) -> None:
    beta_id = str(site.sql("SELECT id FROM clients_auth WHERE tenant = ?", ("beta",))[0][0])
    acme_id = str(site.sql("SELECT id FROM clients_auth WHERE tenant = ?", ("acme",))[0][0])
    assert _agent_login(site, f"{beta_id}:beta-agent-pw") == "Authentication failed"
    assert _agent_login(site, f"{acme_id}:wrong-password") == "Authentication failed"
    assert _agent_login(site, f"{acme_id}:acme-agent-pw") == "connected"
    wait_for(lambda: client_state(site, "acme", "ann", "hosted") == "disconnected",
             what="the hosted agent's disconnect")
    assert site.user("DELETE", "/api/v1/clients/hosted", "ann", "acme").status == 204


# ---------------------------------------------------------------- quotas


def test_client_quota_refuses_an_agent_with_the_retry_text(site: Site) -> None:
    assert site.op("PATCH", "/api/v1/tenants/acme", {"quotas": {"clients": 1}}).status == 200
    acme_id = str(site.sql("SELECT id FROM clients_auth WHERE tenant = ?", ("acme",))[0][0])
    extra = site.agent(f"{acme_id}:acme-agent-pw", "web2")
    extra.wait_log("client is already connected:")
    assert "quota" in extra.log_text() and extra.proc is not None and extra.proc.poll() is None
    assert client_state(site, "acme", "ann", "web2") == ""
    assert site.op("PATCH", "/api/v1/tenants/acme", {"quotas": {"clients": None}}).status == 200
    extra.wait_connected()  # it kept retrying and gets in once there is room
    extra.stop()
    wait_for(lambda: client_state(site, "acme", "ann", "web2") == "disconnected",
             what="web2 disconnected")
    assert site.user("DELETE", "/api/v1/clients/web2", "ann", "acme").status == 204


def test_credential_quota_holds_under_concurrency(site: Site) -> None:
    used = len(site.user("GET", "/api/v1/clients-auth", "ben", "beta").json()["data"])
    assert site.op("PATCH", "/api/v1/tenants/beta",
                   {"quotas": {"credentials": used + 1}}).status == 200
    answers: list[Response] = []

    def create(index: int) -> None:
        answers.append(site.user("POST", "/api/v1/clients-auth", "ben", "beta",
                                 {"id": f"race{index}", "password": "race-password"}))

    threads = [threading.Thread(target=create, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    statuses = sorted(a.status for a in answers)
    assert statuses == [201, 403, 403, 403], [a.body for a in answers]
    over = next(a for a in answers if a.status == 403)
    assert over.error_code == "ERR_CODE_QUOTA_EXCEEDED"
    usage = site.op("GET", "/api/v1/tenants/beta").json()["data"]["quota_usage"]
    assert usage["credentials"] == {"used": used + 1, "quota": used + 1}


def test_tunnel_quota(site: Site) -> None:
    assert site.op("PATCH", "/api/v1/tenants/beta", {"quotas": {"tunnels": 1}}).status == 200
    path = "/api/v1/clients/db1/tunnels?remote=127.0.0.1:9&check_port=0"
    first = site.user("PUT", path, "ben", "beta")
    assert first.status == 200, first.body
    second = site.user("PUT", path.replace(":9", ":10"), "ben", "beta")
    assert (second.status, second.error_code) == (403, "ERR_CODE_QUOTA_EXCEEDED")
    tunnel_id = first.json()["data"]["id"]
    assert site.user("DELETE", f"/api/v1/clients/db1/tunnels/{tunnel_id}", "ben",
                     "beta").status == 204
    assert site.user("PUT", path, "ben", "beta").status == 200  # room again
    metrics = site.op("GET", "/metrics")
    assert metrics.status == 200 and metrics.headers["Content-Type"].startswith("text/plain")
    text = metrics.body.decode()
    assert 'rportd_tenant_tunnels{tenant="beta"} 1' in text
    assert 'rportd_tenant_quota{tenant="beta",kind="tunnels"} 1' in text
    assert 'rportd_orphaned_clients{state="connected"} 1' in text


def test_commands_and_users_quotas(site: Site) -> None:
    beta_users = len(site.user("GET", "/api/v1/users", "ben", "beta").json()["data"])
    assert site.op("PATCH", "/api/v1/tenants/beta",
                   {"quotas": {"commands": 1, "users": beta_users}}).status == 200
    command = {"command": "/usr/bin/sleep 2", "timeout_sec": 10}
    first = site.user("POST", "/api/v1/clients/db1/commands", "ben", "beta", command)
    assert first.status == 200, first.body
    try:
        over = site.user("POST", "/api/v1/clients/db1/commands", "ben", "beta", command)
        assert (over.status, over.error_code) == (403, "ERR_CODE_QUOTA_EXCEEDED")
        usage = site.op("GET", "/api/v1/tenants/beta").json()["data"]["quota_usage"]
        assert usage["commands"] == {"used": 1, "quota": 1}
        jid = first.json()["data"]["jid"]
        wait_for(lambda: site.user("GET", f"/api/v1/clients/db1/commands/{jid}", "ben", "beta")
                 .json()["data"]["status"] != "running", what="the first command ending")
        again = site.user("POST", "/api/v1/clients/db1/commands", "ben", "beta",
                          {"command": "/usr/bin/true"})
        assert again.status == 200, again.body  # room again
        user = site.user("POST", "/api/v1/users", "ben", "beta",
                         {"username": "bea", "password": "bea-password-1"})
        assert (user.status, user.error_code) == (403, "ERR_CODE_QUOTA_EXCEEDED")
    finally:
        assert site.op("PATCH", "/api/v1/tenants/beta",
                       {"quotas": {"commands": None, "users": None}}).status == 200


def test_a_suspended_tenant_is_refused_until_active_again(site: Site) -> None:
    suspended = site.op("PATCH", "/api/v1/tenants/beta", {"status": "suspended"})
    assert suspended.status == 200 and suspended.json()["data"]["status"] == "suspended"
    refused = site.user("GET", "/api/v1/clients", "ben", "beta")
    assert (refused.status, refused.error_code) == (403, "ERR_CODE_TENANT_SUSPENDED")
    for login in (site.user("GET", "/api/v1/login", "ben", "beta"),  # no token while suspended
                  http(site.rportd.api_port, "POST", "/api/v1/login", headers={
                      "Host": f"beta.{DOMAIN}", "Content-Type": "application/json"},
                      body=json.dumps({"username": "ben",
                                       "password": PASSWORDS["ben"]}).encode())):
        assert (login.status, login.error_code) == (403, "ERR_CODE_TENANT_SUSPENDED"), login.body
    db1 = next(a for a in site.agents if "db1" in a.args)
    db1.wait_log("the tenant is suspended")  # closed, and its reconnects told to retry
    assert site.user("GET", "/api/v1/clients", "ann", "acme").status == 200  # others unaffected
    bad = site.op("PATCH", "/api/v1/tenants/beta", {"status": "gone"})
    assert (bad.status, bad.error_code) == (400, "ERR_CODE_INVALID_STATUS")
    assert site.op("PATCH", "/api/v1/tenants/beta", {"status": "active"}).status == 200
    wait_for(lambda: client_state(site, "beta", "ben", "db1") == "connected",
             what="db1 back once beta is active")


# ---------------------------------------------------------------- deletion


def _rows_naming(site: Site, tenant: str) -> dict[str, int]:
    found = {}
    for table in site.tables():
        columns = [c.lower() for c in _columns(site, table)]
        column = "tenant" if "tenant" in columns else "name" if table == "tenants" else None
        if column is None:
            continue
        count = sum(1 for (value,) in site.sql(f"SELECT {column} FROM {table}")
                    if str(value).strip() == tenant)
        if count:
            found[table] = count
    return found


def _columns(site: Site, table: str) -> list[str]:
    if site.kind == "sqlite":
        return [str(r[1]) for r in site.sql(f"PRAGMA table_info({table})")]
    return [str(r[0]) for r in site.sql(f"SHOW COLUMNS FROM `{table}`")]


def _seed_other_tables(site: Site, tenant: str) -> None:
    """Rows in the tables other issues' code writes (jobs, client groups, tokens, audit)."""
    site.sql("INSERT INTO multi_jobs (tenant, jid, started_at, created_by, details) VALUES "
             "(?, 'm1', '2026-01-01T00:00:00Z', 'ann', '{}')", (tenant,))
    site.sql("INSERT INTO jobs (tenant, jid, client_id, status, started_at, created_by, details) "
             "VALUES (?, 'j1', 'web1', 'successful', '2026-01-01T00:00:00Z', 'ann', '{}')",
             (tenant,))
    site.sql("INSERT INTO client_groups (tenant, id, description, params) VALUES "
             "(?, 'g1', '', '{}')", (tenant,))
    site.sql("INSERT INTO api_tokens (id, tenant, username, name, secret_hash, scopes, "
             "created_at) VALUES (?, ?, 'ann', 't', 'h', '[]', '2026-01-01T00:00:00Z')",
             (f"tok-{tenant}", tenant))
    site.sql("INSERT INTO audit_log (tenant, username, action, target, result, source, at, "
             "details) VALUES (?, 'ann', 'x', '', 'ok', '', '2026-01-01T00:00:00Z', '{}')",
             (tenant,))


def test_delete_refuses_while_connected_then_removes_every_trace(site: Site) -> None:
    token = str(site.user("GET", "/api/v1/login", "ann", "acme").json()["data"]["token"])
    for tenant in ("acme", "beta"):
        _seed_other_tables(site, tenant)
    before = _rows_naming(site, "acme")
    assert set(before) >= {"clients", "clients_auth", "users", "groups", "group_permissions",
                           "jobs", "multi_jobs", "client_groups", "api_tokens", "audit_log",
                           "tenants"}, before
    beta_before = _rows_naming(site, "beta")
    refused = site.op("DELETE", "/api/v1/tenants/acme")
    assert (refused.status, refused.error_code) == (409, "ERR_CODE_TENANT_HAS_CLIENTS")
    gone = site.op("DELETE", "/api/v1/tenants/acme?force=true")
    assert gone.status == 200, gone.body
    assert _rows_naming(site, "acme") == {}
    assert _rows_naming(site, "beta") == beta_before  # the other tenant keeps every row
    assert gone.json()["data"]["removed"]["jobs"] == 1
    assert site.op("GET", "/api/v1/tenants/acme").status == 404
    refused_token = site.user("GET", "/api/v1/clients", "", "acme", token=token)
    assert (refused_token.status, refused_token.error_code) == (401, "ERR_CODE_INVALID_TOKEN")
    web1 = next(a for a in site.agents if "web1" in a.args)
    web1.wait_log("Authentication failed")  # disconnected, and its credential is gone
    assert "beta" in [t["name"] for t in site.op("GET", "/api/v1/tenants").json()["data"]]
    assert site.user("GET", "/api/v1/clients", "ben", "beta").json()["data"][0]["id"] == "db1"
    reinstalled = install(site, "acme", "ann")  # the names are free again, nothing inherited
    assert reinstalled.status == 201, reinstalled.body
    assert site.user("GET", "/api/v1/clients", "ann", "acme").json()["data"] == []
    still_refused = site.user("GET", "/api/v1/clients", "", "acme", token=token)
    assert still_refused.status == 401  # the new ann inherits no token of the old one


# ---------------------------------------------------------------- review: deletion while commands run


def test_a_multi_client_command_running_through_a_deletion_writes_nothing_after_it(
        site: Site) -> None:
    """A multi-client job in turn, abort_on_error off: deleting the tenant while its first
    command runs must not let the next parts record themselves (failed) in the new-empty
    tables, where a tenant installed again under the name would find them."""
    PASSWORDS["gus"] = "gus-password-7"
    assert install(site, "gamma", "gus").status == 201
    auth = credential(site, "gamma", "gus", "g1", "gamma-agent-pw")
    agents = [site.agent(f"{auth}:gamma-agent-pw", f"gc{n}") for n in range(4)]
    for agent in agents:
        agent.wait_connected()
    started = site.user("POST", "/api/v1/commands", "gus", "gamma", {
        "command": "/usr/bin/sleep 3", "client_ids": [f"gc{n}" for n in range(4)],
        "execute_concurrently": False, "abort_on_error": False, "timeout_sec": 10})
    assert started.status == 200, started.body
    jid = started.json()["data"]["jid"]
    wait_for(lambda: site.user("GET", f"/api/v1/commands/{jid}", "gus", "gamma")
             .json()["data"]["jobs"], what="the first part running")
    gone = site.op("DELETE", "/api/v1/tenants/gamma?force=true")
    assert gone.status == 200, gone.body
    deadline = time.monotonic() + 1.5  # the parts that would follow land within this
    while time.monotonic() < deadline:
        assert _rows_naming(site, "gamma") == {}
    assert install(site, "gamma", "gus").status == 201
    assert site.user("GET", "/api/v1/clients/gc1/commands", "gus", "gamma").json()["data"] == []
    assert site.op("DELETE", "/api/v1/tenants/gamma?force=true").status == 200
