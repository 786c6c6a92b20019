"""/client-groups end to end, on SQLite and MariaDB: real rportd, real agents, real HTTP. CRUD
with rport's shapes, membership by rport's parameters and wildcards, members that follow clients
connecting, disconnecting and being deleted, groups kept across a restart, and bad input
answered with its own 4xx code, never a 500."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from rportd.client_groups import MAX_GROUPS_PER_TENANT, PARAM_NAMES

from .api_world import create_mysql_database, drop_mysql_database
from .conftest import MYSQL_HOST, MYSQL_PASSWORD, MYSQL_PORT, MYSQL_USER, require_mysql
from .helpers import Response, http, write_config
from .processes import Agent, Rportd, wait_for

ADMIN = ("admin", "foobaz")
GROUPS = "/api/v1/client-groups"


@dataclass
class Server:
    rportd: Rportd
    tmp: Path
    database: dict[str, object]
    agents: dict[str, Agent]

    def call(self, method: str, path: str, body: Any = None, raw: bytes | None = None) -> Response:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        return http(self.rportd.api_port, method, path, basic=ADMIN, body=data)

    def agent(self, client_id: str, *args: str) -> Agent:
        agent = Agent(self.tmp, self.rportd.url, "c1:secret", "--id", client_id, *args,
                      name=f"agent-{client_id}").start()
        self.agents[client_id] = agent
        return agent

    def members(self, group_id: str) -> list[str]:
        answer = self.call("GET", f"{GROUPS}/{group_id}")
        assert answer.status == 200, answer.body
        return list(answer.json()["data"]["client_ids"])

    def client(self, client_id: str) -> dict[str, Any]:
        return dict(self.call("GET", f"/api/v1/clients/{client_id}").json()["data"])

    def sql(self, statement: str, rows: list[tuple[Any, ...]]) -> None:
        if self.database["db_type"] == "sqlite":
            import sqlite3

            with sqlite3.connect(str(self.database["db_name"])) as conn:
                conn.executemany(statement, rows)
            return
        import pymysql

        conn = pymysql.connect(host=MYSQL_HOST, port=MYSQL_PORT, user=MYSQL_USER,
                               password=MYSQL_PASSWORD, database=str(self.database["db_name"]),
                               autocommit=True)
        try:
            with conn.cursor() as cursor:
                cursor.executemany(statement.replace("?", "%s"), rows)
        finally:
            conn.close()


def _database(kind: str, tmp: Path) -> dict[str, object]:
    if kind == "sqlite":
        return {"db_type": "sqlite", "db_name": str(tmp / "rportd.db")}
    require_mysql().close()
    return {"db_type": "mysql", "db_host": f"{MYSQL_HOST}:{MYSQL_PORT}", "db_user": MYSQL_USER,
            "db_password": MYSQL_PASSWORD, "db_name": create_mysql_database()}


@pytest.fixture(scope="module", params=["sqlite", pytest.param("mysql", marks=pytest.mark.mysql)])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[Server]:
    """rportd without tenancy (groups are kept under tenant ''), two agents: web-1 (tags QA,
    eu) and db-1 (tag prod)."""
    tmp = tmp_path_factory.mktemp(f"groups-{request.param}")
    database = _database(request.param, tmp)
    migrate = write_config(tmp / "migrate.conf", {"server": {"allow_root": True,
                                                             "data_dir": str(tmp / "data")},
                                                  "database": database})
    subprocess.run([sys.executable, "-m", "rportd.cli", "migrate", "-c", str(migrate)],
                   check=True, capture_output=True)
    rportd = Rportd(tmp, {"server": {"auth": "c1:secret", "keep_lost_clients": "1h"},
                          "api": {"auth": "admin:foobaz"}, "database": database}).start()
    built = Server(rportd, tmp, database, {})
    try:
        built.agent("web-1", "--name", "Web One", "--tag", "QA", "--tag", "eu")
        built.agent("db-1", "--name", "DB", "--tag", "prod")
        for agent in built.agents.values():
            agent.wait_connected()
        yield built
    finally:
        for agent in built.agents.values():
            agent.stop()
        rportd.stop()
        if request.param == "mysql":
            drop_mysql_database(str(database["db_name"]))


@pytest.fixture
def group(server: Server) -> Iterator[Any]:
    """Creates groups for one test and deletes them afterwards."""
    made: list[str] = []

    def create(group_id: str, params: dict[str, Any] | None, description: str = "") -> Response:
        answer = server.call("POST", GROUPS, {"id": group_id, "description": description,
                                              "params": params})
        assert answer.status == 201, answer.body
        made.append(group_id)
        return answer

    yield create
    for group_id in made:
        server.call("DELETE", f"{GROUPS}/{group_id}")


# ---------------------------------------------------------------- CRUD


def test_create_get_list_put_delete_with_rports_shapes(server: Server, group: Any) -> None:
    created = group("group-1", {"tag": ["QA"], "os_family": ["linux*", "*"]}, "my group")
    data = created.json()["data"]
    assert data["id"] == "group-1" and data["description"] == "my group"
    assert list(data["params"]) == list(PARAM_NAMES)  # every parameter, null when unset
    assert data["params"]["tag"] == ["QA"] and data["params"]["client_id"] is None
    assert (data["client_ids"], data["num_clients"], data["num_clients_connected"]) == \
        (["web-1"], 1, 1)
    assert server.call("GET", f"{GROUPS}/group-1").json() == {"data": data}
    listing = server.call("GET", GROUPS).json()
    assert [g["id"] for g in listing["data"]] == ["group-1"] and listing["meta"] == {"count": 1}
    # PUT replaces everything (rport: "all the parameters will be overridden")
    replaced = server.call("PUT", f"{GROUPS}/group-1", {"id": "group-1",
                                                       "params": {"client_id": ["db-*"]}})
    assert (replaced.status, replaced.body) == (204, b"")
    again = server.call("GET", f"{GROUPS}/group-1").json()["data"]
    assert (again["description"], again["params"]["tag"], again["client_ids"]) == \
        ("", None, ["db-1"])
    deleted = server.call("DELETE", f"{GROUPS}/group-1")
    assert (deleted.status, deleted.body) == (204, b"")
    for method in ("GET", "DELETE"):
        gone = server.call(method, f"{GROUPS}/group-1")
        assert gone.status == 404 and gone.error_code == "ERR_CODE_CLIENT_GROUP_NOT_FOUND"


def test_put_creates_a_missing_group_as_rport_does(server: Server) -> None:
    made = server.call("PUT", f"{GROUPS}/new-one", {"id": "new-one",
                                                    "params": {"name": ["db"]}})
    assert made.status == 204
    assert server.members("new-one") == ["db-1"]
    assert server.call("DELETE", f"{GROUPS}/new-one").status == 204


def test_duplicate_id_is_409_and_ids_are_case_sensitive(server: Server, group: Any) -> None:
    group("grp", {"client_id": ["*"]})
    again = server.call("POST", GROUPS, {"id": "grp", "params": {"client_id": ["x"]}})
    assert again.status == 409 and again.error_code == "ERR_CODE_ALREADY_EXIST"
    group("GRP", {"client_id": ["web-1"]})  # another group, whatever the collation
    assert (server.members("grp"), server.members("GRP")) == (["db-1", "web-1"], ["web-1"])
    assert [g["id"] for g in server.call("GET", GROUPS).json()["data"]] == ["GRP", "grp"]


# ---------------------------------------------------------------- membership


def test_membership_by_rports_parameters(server: Server, group: Any) -> None:
    web = server.client("web-1")
    expected = {
        "by-id": ({"client_id": ["web-*"]}, ["web-1"]),
        "suffix": ({"client_id": ["*-1"]}, ["db-1", "web-1"]),
        "q-literal": ({"client_id": ["web-?"]}, []),  # only * is a wildcard
        "bracket": ({"client_id": ["[w]eb-1"]}, []),
        "name-case": ({"name": ["WEB one"]}, ["web-1"]),  # exact, ignoring case
        "name-part": ({"name": ["web"]}, []),  # exact means the whole value
        "tag-or": ({"tag": ["qa", "prod"]}, ["db-1", "web-1"]),
        "tag-any": ({"tag": ["e*"]}, ["web-1"]),
        "and": ({"tag": ["*"], "os_kernel": [web["os_kernel"].upper()],
                 "name": ["d*"]}, ["db-1"]),
        "hostname": ({"hostname": [socket.gethostname()]}, ["db-1", "web-1"]),
        "auth-id": ({"client_auth_id": ["C1"]}, ["db-1", "web-1"]),
        "address": ({"address": ["127.0.0.1*"]}, ["db-1", "web-1"]),
        "arch": ({"os_arch": [web["os_arch"]], "os_family": [web["os_family"] or "*"],
                  "os": ["*" + web["os"][-3:]]}, ["db-1", "web-1"]),
        "version": ({"version": [web["version"]]}, ["db-1", "web-1"]),
        "no-params": ({}, []),  # rport: a group without params has no members
        "empty-tag": ({"tag": []}, []),  # [] matches only clients without any tag
        "none": ({"client_id": ["nobody"]}, []),
    }
    for group_id, (params, _) in expected.items():
        group(group_id, params)
    listing = {g["id"]: g["client_ids"] for g in server.call("GET", GROUPS).json()["data"]}
    assert listing == {group_id: members for group_id, (_, members) in expected.items()}
    with_ipv4 = sorted(c["id"] for c in server.call("GET", "/api/v1/clients").json()["data"]
                       if c["ipv4"])
    group("ipv4", {"ipv4": ["*"]})
    assert server.members("ipv4") == with_ipv4


def test_members_follow_clients_connecting_disconnecting_and_deleted(
        server: Server, group: Any) -> None:
    group("qa", {"tag": ["qa"]})
    assert server.members("qa") == ["web-1"]
    newcomer = server.agent("web-2", "--name", "web two", "--tag", "Qa")
    newcomer.wait_connected()
    assert server.members("qa") == ["web-1", "web-2"]
    newcomer.stop()
    wait_for(lambda: server.client("web-2")["connection_state"] == "disconnected",
             what="web-2 disconnected")
    data = server.call("GET", f"{GROUPS}/qa").json()["data"]
    # rport lists a group's disconnected clients too; the counts tell them apart
    assert (data["client_ids"], data["num_clients"], data["num_clients_connected"]) == \
        (["web-1", "web-2"], 2, 1)
    assert server.call("DELETE", "/api/v1/clients/web-2").status == 204
    assert server.members("qa") == ["web-1"]


def test_groups_are_kept_across_a_restart(server: Server) -> None:
    kept = {"id": "kept", "description": "über", "params": {"tag": ["prod"],
                                                             "client_auth_id": ["C*"]}}
    assert server.call("POST", GROUPS, kept).status == 201
    server.rportd.stop()
    server.rportd.start()
    try:
        after = server.call("GET", f"{GROUPS}/kept").json()["data"]
        assert (after["description"], after["params"]["tag"], after["params"]["client_auth_id"]) \
            == ("über", ["prod"], ["C*"])
        server.agents["db-1"].wait_connected(count=2)
        wait_for(lambda: server.members("kept") == ["db-1"],
                 what=lambda: f"db-1 back in its group: {server.call('GET', GROUPS).body!r}")
        assert server.call("POST", GROUPS, kept).status == 409
    finally:
        server.call("DELETE", f"{GROUPS}/kept")
        server.agents["web-1"].wait_connected(count=2)


# ---------------------------------------------------------------- bad input


BAD_BODIES: list[tuple[Any, str]] = [
    ([], "ERR_CODE_INVALID_CLIENT_GROUP"),
    ({"id": "g", "owner": "x"}, "ERR_CODE_INVALID_CLIENT_GROUP"),
    ({"id": "g", "description": 5}, "ERR_CODE_INVALID_CLIENT_GROUP"),
    ({"id": "g", "description": "d" * 2001}, "ERR_CODE_INVALID_CLIENT_GROUP"),
    ({"id": "g", "client_ids": "web-1"}, "ERR_CODE_INVALID_CLIENT_GROUP"),
    ({"params": {}}, "ERR_CODE_INVALID_CLIENT_GROUP_ID"),
    ({"id": ""}, "ERR_CODE_INVALID_CLIENT_GROUP_ID"),
    ({"id": "   "}, "ERR_CODE_INVALID_CLIENT_GROUP_ID"),
    ({"id": 7}, "ERR_CODE_INVALID_CLIENT_GROUP_ID"),
    ({"id": "g" * 31}, "ERR_CODE_INVALID_CLIENT_GROUP_ID"),
    ({"id": "grp  "}, "ERR_CODE_INVALID_CLIENT_GROUP_ID"),
    ({"id": "a/b"}, "ERR_CODE_INVALID_CLIENT_GROUP_ID"),
    ({"id": "gr\u00fcn"}, "ERR_CODE_INVALID_CLIENT_GROUP_ID"),
    ({"id": "g", "params": []}, "ERR_CODE_INVALID_CLIENT_GROUP_PARAMS"),
    ({"id": "g", "params": {"tags": ["qa"]}}, "ERR_CODE_INVALID_CLIENT_GROUP_PARAMS"),
    ({"id": "g", "params": {"password": ["*"]}}, "ERR_CODE_INVALID_CLIENT_GROUP_PARAMS"),
    ({"id": "g", "params": {"tag": "qa"}}, "ERR_CODE_INVALID_CLIENT_GROUP_PARAMS"),
    ({"id": "g", "params": {"tag": [1]}}, "ERR_CODE_INVALID_CLIENT_GROUP_PARAMS"),
    ({"id": "g", "params": {"tag": [None]}}, "ERR_CODE_INVALID_CLIENT_GROUP_PARAMS"),
    ({"id": "g", "params": {"tag": {"and": ["a"]}}}, "ERR_CODE_INVALID_CLIENT_GROUP_PARAMS"),
    ({"id": "g", "params": {"tag": ["x"] * 101}}, "ERR_CODE_INVALID_CLIENT_GROUP_PARAMS"),
    ({"id": "g", "params": {"name": ["n" * 201]}}, "ERR_CODE_INVALID_CLIENT_GROUP_PARAMS"),
]


@pytest.mark.parametrize("body, code", BAD_BODIES)
def test_bad_bodies_get_their_own_400(server: Server, body: Any, code: str) -> None:
    for method, path in (("POST", GROUPS), ("PUT", f"{GROUPS}/g")):
        answer = server.call(method, path, body)
        assert (answer.status, answer.error_code) == (400, code), (method, answer.body)
    assert server.call("GET", f"{GROUPS}/g").status == 404  # nothing was stored


def test_malformed_json_ids_in_paths_and_mismatches(server: Server) -> None:
    for raw in (b"{", b"", b"\xff"):
        answer = server.call("POST", GROUPS, raw=raw)
        assert (answer.status, answer.error_code) == (400, "ERR_CODE_INVALID_JSON"), answer.body
    mismatch = server.call("PUT", f"{GROUPS}/one", {"id": "two"})
    assert (mismatch.status, mismatch.error_code) == (400, "ERR_CODE_CLIENT_GROUP_ID_MISMATCH")
    for path in ("g" * 31, "grp%20%20", "a%2Fb", "%C3%BC"):
        for method in ("GET", "DELETE"):
            answer = server.call(method, f"{GROUPS}/{path}")
            assert (answer.status, answer.error_code) == \
                (400, "ERR_CODE_INVALID_CLIENT_GROUP_ID"), (method, path, answer.body)


def test_a_tenant_has_at_most_its_limit_of_groups(server: Server) -> None:
    rows = [("", f"bulk-{n}", "", "{}") for n in range(MAX_GROUPS_PER_TENANT)]
    server.sql("INSERT INTO client_groups (tenant, id, description, params) "
               "VALUES (?, ?, ?, ?)", rows)
    try:
        over = server.call("POST", GROUPS, {"id": "one-more"})
        assert (over.status, over.error_code) == (400, "ERR_CODE_CLIENT_GROUP_LIMIT")
        put = server.call("PUT", f"{GROUPS}/one-more", {"id": "one-more"})
        assert (put.status, put.error_code) == (400, "ERR_CODE_CLIENT_GROUP_LIMIT")
        replace = server.call("PUT", f"{GROUPS}/bulk-7", {"id": "bulk-7", "params": {
            "client_id": ["db-1"]}})
        assert replace.status == 204  # replacing an existing group is not one more
        listing = server.call("GET", GROUPS).json()
        assert listing["meta"]["count"] == MAX_GROUPS_PER_TENANT
        assert next(g for g in listing["data"] if g["id"] == "bulk-7")["client_ids"] == ["db-1"]
    finally:
        server.sql("DELETE FROM client_groups WHERE id = ?", [(r[1],) for r in rows])
