"""The cross-tenant matrix, on SQLite and on MariaDB: every endpoint x {own tenant, other tenant,
tenantless user, nonexistent id}. "Other tenant" and "nonexistent" answers are compared byte for
byte: nobody learns that another tenant's object exists."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from rportd.api.app import ROUTES
from rportd.tenancy import tenant_tag

from .api_world import (
    World,
    build_world,
    create_mysql_database,
    create_seed_tables,
    drop_mysql_database,
)
from .conftest import MYSQL_HOST, MYSQL_PASSWORD, MYSQL_PORT, MYSQL_USER, require_mysql
from .helpers import Response, http
from .processes import Agent, wait_for

OPERATOR_KEY = "matrix-operator-key-" + "o" * 32


def _mysql_section() -> dict[str, object]:
    require_mysql().close()
    name = create_mysql_database()
    return {"db_type": "mysql", "db_host": f"{MYSQL_HOST}:{MYSQL_PORT}", "db_user": MYSQL_USER,
            "db_password": MYSQL_PASSWORD, "db_name": name}


@pytest.fixture(scope="module", params=["sqlite", pytest.param("mysql", marks=pytest.mark.mysql),
                                        pytest.param("mysql-seed-ddl", marks=pytest.mark.mysql)])
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[World]:
    """SQLite; MariaDB tables made by `rportd migrate` (binary collation); and MariaDB tables
    made from rport's own DDL (utf8, case- and pad-insensitive), as operators have them, with
    tenants J and j."""
    tmp = tmp_path_factory.mktemp(f"world-{request.param}")
    if request.param == "sqlite":
        database: dict[str, object] = {"db_type": "sqlite", "db_name": str(tmp / "rportd.db")}
    else:
        database = _mysql_section()
    if request.param == "mysql-seed-ddl":
        create_seed_tables(database)
    kind = "sqlite" if request.param == "sqlite" else "mysql"
    built = build_world(tmp, kind, database, extra={"api": {"operator_key": OPERATOR_KEY}},
                        other="j" if request.param == "mysql-seed-ddl" else "G")
    try:
        yield built
    finally:
        built.stop()
        if kind == "mysql":
            drop_mysql_database(str(database["db_name"]))


def ids(response_body: bytes) -> list[str]:
    return sorted(client["id"] for client in json.loads(response_body)["data"])


def same_as_missing(world: World, method: str, other: str, missing: str, user: str = "alice",
                    body: bytes | None = None) -> None:
    """Another tenant's object must answer exactly like one that does not exist."""
    theirs = world.request(method, other, user, body=body)
    nothing = world.request(method, missing, user, body=body)
    assert theirs.status == nothing.status == 404, (theirs.body, nothing.body)
    assert theirs.body == nothing.body


# ---------------------------------------------------------------- listing and fetching


def test_each_user_lists_only_their_tenant(world: World) -> None:
    assert ids(world.request("GET", "/api/v1/clients", "alice").body) == ["jonly", "x"]
    assert ids(world.request("GET", "/api/v1/clients", "gina").body) == ["gonly", "x"]


def test_tenantless_user_sees_empty_list_and_404s(world: World) -> None:
    listing = world.request("GET", "/api/v1/clients", "nobody")
    assert (listing.status, listing.json()) == (200, {"data": [], "meta": {"count": 0}})
    assert world.request("GET", "/api/v1/clients-auth", "nobody").json() == {"data": []}
    status = world.request("GET", "/api/v1/status", "nobody").json()["data"]
    assert (status["clients_connected"], status["clients_disconnected"]) == (0, 0)
    for path in ("/api/v1/clients/x", "/api/v1/clients/o1"):
        assert world.request("GET", path, "nobody").body == \
            world.request("GET", "/api/v1/clients/none", "nobody").body
        assert world.request("GET", path, "nobody").status == 404
    created = world.request("POST", "/api/v1/clients-auth", "nobody",
                            body=b'{"id": "nob1", "password": "password1"}')
    assert created.status == 403


def test_orphaned_client_is_connected_but_invisible(world: World) -> None:
    assert world.sql("SELECT tenant FROM clients WHERE id = ?", ("o1",)) == [("",)]
    for user in ("alice", "gina", "nobody"):
        listed = world.request("GET", "/api/v1/clients", user).json()["data"]
        assert "o1" not in [c["id"] for c in listed]
        same_as_missing(world, "GET", "/api/v1/clients/o1", "/api/v1/clients/none", user)


def test_same_client_id_in_two_tenants_are_two_clients(world: World) -> None:
    mine = world.request("GET", "/api/v1/clients/x", "alice").json()["data"]
    theirs = world.request("GET", "/api/v1/clients/x", "gina").json()["data"]
    assert (mine["tenant"], mine["client_auth_id"], mine["name"]) == ("J", "cj", "x@cj")
    assert (theirs["tenant"], theirs["client_auth_id"], theirs["name"]) == \
        (world.other, "cg", "x@cg")
    assert mine["connection_state"] == theirs["connection_state"] == "connected"


def test_other_tenants_client_answers_like_a_missing_one(world: World) -> None:
    same_as_missing(world, "GET", "/api/v1/clients/gonly", "/api/v1/clients/nope")
    same_as_missing(world, "DELETE", "/api/v1/clients/gonly", "/api/v1/clients/nope")
    same_as_missing(world, "PUT", "/api/v1/clients/gonly/tunnels?remote=22&check_port=0",
                    "/api/v1/clients/nope/tunnels?remote=22&check_port=0")
    same_as_missing(world, "DELETE", "/api/v1/clients/gonly/tunnels/1",
                    "/api/v1/clients/nope/tunnels/1")


def test_filters_and_sorting_stay_inside_the_tenant(world: World) -> None:
    found = world.request("GET", "/api/v1/clients?filter[name]=*@cg", "alice").json()
    assert found == {"data": [], "meta": {"count": 0}}
    page = world.request("GET", "/api/v1/clients?sort=-id&page[limit]=1", "alice").json()
    assert [c["id"] for c in page["data"]] == ["x"] and page["meta"]["count"] == 2
    bad = world.request("GET", "/api/v1/clients?filter[password]=x", "alice")
    assert bad.status == 400 and bad.json()["errors"][0]["code"] == "ERR_CODE_INVALID_REQUEST"


def test_status_counts_only_the_callers_tenant(world: World) -> None:
    data = world.request("GET", "/api/v1/status", "gina").json()["data"]
    assert (data["clients_connected"], data["clients_disconnected"]) == (2, 0)
    assert len(data["fingerprint"].split(":")) == 16


def test_me_shows_tenant_and_only_same_tenant_groups(world: World) -> None:
    data = world.request("GET", "/api/v1/me", "alice").json()["data"]
    assert {k: data[k] for k in ("username", "groups", "tenant")} == \
        {"username": "alice", "groups": ["Administrators"], "tenant": "J"}
    assert world.request("GET", "/api/v1/me", "nobody").json()["data"]["tenant"] == ""


# ---------------------------------------------------------------- tunnels


def test_tunnel_endpoints_cross_tenant(world: World) -> None:
    made = world.request("PUT", "/api/v1/clients/x/tunnels?remote=127.0.0.1:9&check_port=0",
                         "gina")
    assert made.status == 200, made.body
    tunnel_id = made.json()["data"]["id"]
    # alice's "x" is a different client: gina's tunnel id does not exist there
    gone = world.request("DELETE", f"/api/v1/clients/x/tunnels/{tunnel_id}", "alice")
    assert gone.status == 404
    assert gone.json()["errors"][0]["code"] == "ERR_CODE_TUNNEL_NOT_FOUND"
    theirs = world.request("DELETE", f"/api/v1/clients/gonly/tunnels/{tunnel_id}", "alice")
    missing = world.request("DELETE", f"/api/v1/clients/none/tunnels/{tunnel_id}", "alice")
    assert theirs.body == missing.body and theirs.status == 404
    assert world.request("DELETE", f"/api/v1/clients/x/tunnels/{tunnel_id}", "gina").status == 204


# ---------------------------------------------------------------- credentials


def test_credentials_are_listed_per_tenant_without_passwords(world: World) -> None:
    assert world.request("GET", "/api/v1/clients-auth", "alice").json() == {"data": [{"id": "cj"}]}
    assert world.request("GET", "/api/v1/clients-auth", "gina").json() == {"data": [{"id": "cg"}]}
    assert b"secret" not in world.request("GET", "/api/v1/clients-auth", "alice").body


def test_credential_delete_cross_tenant_answers_like_missing(world: World) -> None:
    same_as_missing(world, "DELETE", "/api/v1/clients-auth/cg", "/api/v1/clients-auth/none")
    assert world.sql("SELECT id FROM clients_auth WHERE id = ?", ("cg",)) == [("cg",)]
    in_use = world.request("DELETE", "/api/v1/clients-auth/cj", "alice")
    assert in_use.status == 400
    assert in_use.json()["errors"][0]["code"] == "ERR_CODE_CLIENT_AUTH_HAS_CLIENT"


def test_credential_created_through_the_api_takes_the_callers_tenant(
        world: World, tmp_path: Path) -> None:
    created = world.request("POST", "/api/v1/clients-auth", "alice",
                            body=b'{"id": "cj-new", "password": "new-password-1"}')
    assert created.status == 201, created.body
    stored_id = created.json()["data"]["id"]
    assert stored_id == tenant_tag("J") + "_cj-new"  # namespaced by the caller's tenant
    stored = world.sql("SELECT tenant, password FROM clients_auth WHERE id = ?", (stored_id,))
    assert stored[0][0] == "J" and str(stored[0][1]).startswith("$2b$")
    # The same id in another tenant is another credential: no answer depends on J's data.
    theirs = world.request("POST", "/api/v1/clients-auth", "gina",
                           body=b'{"id": "cj-new", "password": "other-password"}')
    assert theirs.status == 201 and theirs.json()["data"]["id"] == tenant_tag(world.other) + "_cj-new"
    again = world.request("POST", "/api/v1/clients-auth", "alice",
                          body=b'{"id": "cj-new", "password": "new-password-1"}')
    assert again.status == 409  # only the caller's own namespace can conflict
    agent = Agent(tmp_path, world.rportd.url, f"{stored_id}:new-password-1", "--id",
                  "fresh").start()
    try:
        agent.wait_connected()
        assert "fresh" in ids(world.request("GET", "/api/v1/clients", "alice").body)
        assert "fresh" not in ids(world.request("GET", "/api/v1/clients", "gina").body)
    finally:
        agent.stop()
    wait_for(lambda: world.request("GET", "/api/v1/clients/fresh", "alice").json()["data"]
             ["connection_state"] == "disconnected", what="fresh disconnected")
    assert world.request("DELETE", "/api/v1/clients/fresh", "gina").status == 404
    assert world.request("DELETE", "/api/v1/clients/fresh", "alice").status == 204
    assert world.request("DELETE", f"/api/v1/clients-auth/{stored_id}", "gina").status == 404
    assert world.request("DELETE", f"/api/v1/clients-auth/{stored_id}", "alice").status == 204
    gina_id = theirs.json()["data"]["id"]
    assert world.request("DELETE", f"/api/v1/clients-auth/{gina_id}", "gina").status == 204


# ---------------------------------------------------------------- users and tokens


def test_moving_a_user_to_another_tenant_takes_effect_at_once(world: World) -> None:
    token = world.token("gina")
    world.sql("UPDATE users SET tenant = ? WHERE username = ?", ("J", "gina"))
    try:
        # A token is bound to (tenant, username, password hash): the move ends it, and no
        # token can reach a tenant it was not issued in.
        refused = world.request("GET", "/api/v1/clients", token=token)
        assert refused.status == 401 and refused.error_code == "ERR_CODE_INVALID_TOKEN"
        assert ids(world.request("GET", "/api/v1/clients", "gina").body) == ["jonly", "x"]
    finally:
        world.sql("UPDATE users SET tenant = ? WHERE username = ?", (world.other, "gina"))


def test_removed_users_token_stops_working(world: World) -> None:
    world.sql("INSERT INTO users (username, password, tenant) VALUES (?, ?, ?)",
              ("temp", world.sql("SELECT password FROM users WHERE username = ?",
                                 ("alice",))[0][0], "J"))
    from .api_world import PASSWORDS

    PASSWORDS["temp"] = PASSWORDS["alice"]
    token = world.token("temp")
    assert world.request("GET", "/api/v1/clients", token=token).status == 200
    world.sql("DELETE FROM users WHERE username = ?", ("temp",))
    refused = world.request("GET", "/api/v1/clients", token=token)
    assert refused.status == 401
    assert refused.json()["errors"][0]["code"] == "ERR_CODE_INVALID_TOKEN"


# ---------------------------------------------------------------- users, groups, tokens, audit


def test_other_tenants_user_answers_like_a_missing_one(world: World) -> None:
    change = b'{"password": "another-password"}'
    for method in ("PUT", "PATCH"):
        same_as_missing(world, method, "/api/v1/users/gina", "/api/v1/users/none", body=change)
    same_as_missing(world, "DELETE", "/api/v1/users/gina", "/api/v1/users/none")
    assert world.request("GET", "/api/v1/me", "gina").status == 200  # untouched
    names = {u["username"] for u in world.request("GET", "/api/v1/users", "alice").json()["data"]}
    assert "alice" in names and not {"gina", "nobody"} & names
    # a name another tenant holds can be created: it lands in the caller's namespace
    made = world.request("POST", "/api/v1/users", "alice",
                         body=b'{"username": "gina", "password": "gina-in-j-pw"}')
    assert made.status == 201 and made.json()["data"]["username"] == tenant_tag("J") + "_gina"
    assert world.request("DELETE", f"/api/v1/users/{tenant_tag('J')}_gina", "alice").status == 204


def test_other_tenants_group_answers_like_a_missing_one(world: World) -> None:
    same_as_missing(world, "GET", "/api/v1/user-groups/ops", "/api/v1/user-groups/none")
    same_as_missing(world, "DELETE", "/api/v1/user-groups/ops", "/api/v1/user-groups/none")
    listed = {g["name"] for g in world.request("GET", "/api/v1/user-groups", "alice").json()["data"]}
    assert "ops" not in listed and "Sneaky" not in listed
    # J's own `ops` is another group: granting and deleting it leaves the other tenant's alone
    assert world.request("PUT", "/api/v1/user-groups/ops", "alice",
                         body=b'{"permissions": ["clients:read"]}').status == 200
    assert world.request("DELETE", "/api/v1/user-groups/ops", "alice").status == 204
    assert world.request("GET", "/api/v1/me", "gina").json()["data"]["groups"] == ["ops"]
    assert world.sql("SELECT COUNT(*) FROM group_permissions")[0][0] == 0
    for path in ("/api/v1/users", "/api/v1/user-groups"):
        assert world.request("GET", path, "nobody").status == 403  # not an administrator


def test_other_tenants_token_answers_like_a_missing_one(world: World) -> None:
    made = world.request("POST", "/api/v1/me/tokens", "gina",
                         body=b'{"scopes": ["clients:read"], "name": "g"}')
    assert made.status == 201, made.body
    token, token_id = made.json()["data"]["token"], made.json()["data"]["id"]
    same_as_missing(world, "DELETE", f"/api/v1/me/tokens/{token_id}", "/api/v1/me/tokens/none")
    assert token_id not in world.request("GET", "/api/v1/me/tokens", "alice").body.decode()
    assert ids(world.request("GET", "/api/v1/clients", token=token).body) == ["gonly", "x"]
    same_as_missing(world, "GET", "/api/v1/clients/jonly", "/api/v1/clients/none", user="gina")
    assert world.request("GET", "/api/v1/clients/jonly", token=token).status == 404
    assert world.request("DELETE", f"/api/v1/me/tokens/{token_id}", "gina").status == 204


def test_other_tenants_audit_entries_are_invisible(world: World) -> None:
    world.request("DELETE", "/api/v1/clients/gonly", "gina")  # connected: refused, audited
    world.request("DELETE", "/api/v1/clients/jonly", "alice")
    wait_for(lambda: world.request("GET", "/api/v1/auditlog?filter[username]=alice",
                                   "alice").json()["data"], what="alice's entry")
    theirs = world.request("GET", "/api/v1/auditlog?filter[username]=gina", "alice")
    nobody = world.request("GET", "/api/v1/auditlog?filter[username]=none", "alice")
    assert theirs.status == nobody.status == 200 and theirs.body == nobody.body
    entries = world.request("GET", "/api/v1/auditlog?page[limit]=1000", "alice").json()["data"]
    assert entries and all(e["tenant"] == "J" for e in entries)
    theirs = wait_for(lambda: world.sql("SELECT tenant FROM audit_log WHERE username = ?",
                                        ("gina",)), what="gina's entry")
    assert all(row[0] == world.other for row in theirs)


def test_personal_token_works_only_in_its_owners_tenant(world: World) -> None:
    token = world.request("POST", "/api/v1/me/tokens", "gina",
                          body=b'{"scopes": ["*"]}').json()["data"]["token"]
    world.sql("UPDATE users SET tenant = ? WHERE username = ?", ("J", "gina"))
    try:
        refused = world.request("GET", "/api/v1/clients", token=token)
        assert refused.status == 401 and refused.error_code == "ERR_CODE_INVALID_TOKEN"
    finally:
        world.sql("UPDATE users SET tenant = ? WHERE username = ?", (world.other, "gina"))

# ---------------------------------------------------------------- the newest clients' fields


@pytest.mark.parametrize("field", ["num_cpus", "mem_total", "timezone", "session_id",
                                   "os_full_name", "cpu_vendor", "labels"])
def test_filters_on_the_newest_clients_fields_stay_inside_the_tenant(world: World,
                                                                     field: str) -> None:
    """Our agents report the newest client's fields; a filter on one never reaches across."""
    for user, own in (("alice", ["jonly", "x"]), ("gina", ["gonly", "x"]), ("nobody", [])):
        listed = world.request("GET", f"/api/v1/clients?filter[{field}]=*,", user)
        expected = own if field != "labels" else []  # no labels: nothing matches
        assert listed.status == 200 and ids(listed.body) == expected, (user, field)

# ---------------------------------------------------------------- client groups


def _group(world: World, user: str, group_id: str, params: dict[str, list[str]],
           method: str = "POST") -> int:
    path = "/api/v1/client-groups" + ("" if method == "POST" else f"/{group_id}")
    body = json.dumps({"id": group_id, "params": params}).encode()
    return world.request(method, path, user, body=body).status


def _members(world: World, user: str, group_id: str) -> list[str]:
    answer = world.request("GET", f"/api/v1/client-groups/{group_id}", user)
    assert answer.status == 200, answer.body
    return list(answer.json()["data"]["client_ids"])


def _drop_groups(world: World) -> None:
    world.sql("DELETE FROM client_groups")


def test_a_group_has_only_its_tenants_clients_even_with_a_star(world: World) -> None:
    try:
        assert _group(world, "alice", "everyone", {"client_id": ["*"]}) == 201
        assert _group(world, "gina", "everyone", {"client_id": ["*"]}) == 201  # same id: fine
        assert _members(world, "alice", "everyone") == ["jonly", "x"]  # never o1 or gonly
        assert _members(world, "gina", "everyone") == ["gonly", "x"]
        assert _group(world, "alice", "by-name", {"name": ["*@cg", "x*"]}) == 201
        assert _members(world, "alice", "by-name") == ["x"]  # alice's x (x@cj), not gina's
        listed = world.request("GET", "/api/v1/client-groups", "gina").json()
        assert [g["id"] for g in listed["data"]] == ["everyone"] and listed["meta"]["count"] == 1
        assert _group(world, "alice", "everyone", {"client_id": ["*"]}) == 409  # her own only
    finally:
        _drop_groups(world)


def test_other_tenants_client_group_answers_like_a_missing_one(world: World) -> None:
    try:
        assert _group(world, "gina", "g-only", {"tag": ["*"]}) == 201
        same_as_missing(world, "GET", "/api/v1/client-groups/g-only",
                        "/api/v1/client-groups/none")
        same_as_missing(world, "DELETE", "/api/v1/client-groups/g-only",
                        "/api/v1/client-groups/none")
        # PUT of that id makes alice a group of her own and leaves gina's as it was
        assert _group(world, "alice", "g-only", {"client_id": ["jonly"]}, "PUT") == 204
        assert _members(world, "alice", "g-only") == ["jonly"]
        theirs = world.request("GET", "/api/v1/client-groups/g-only", "gina").json()["data"]
        assert (theirs["params"]["tag"], theirs["params"]["client_id"]) == (["*"], None)
        assert world.request("DELETE", "/api/v1/client-groups/g-only", "alice").status == 204
        assert world.request("GET", "/api/v1/client-groups/g-only", "gina").status == 200
    finally:
        _drop_groups(world)


def test_group_ids_are_exact_per_tenant_and_case(world: World) -> None:
    """J and j (on rport's DDL the other tenant is `j`), grp and GRP: four groups."""
    try:
        for user, group_id, client in (("alice", "grp", "x"), ("gina", "grp", "gonly"),
                                       ("alice", "GRP", "jonly"), ("gina", "GRP", "x")):
            assert _group(world, user, group_id, {"client_id": [client]}) == 201
        assert (_members(world, "alice", "grp"), _members(world, "alice", "GRP")) == \
            (["x"], ["jonly"])
        assert (_members(world, "gina", "grp"), _members(world, "gina", "GRP")) == \
            (["gonly"], ["x"])
        rows = world.sql("SELECT tenant, id FROM client_groups")
        assert sorted(rows) == sorted([("J", "grp"), ("J", "GRP"), (world.other, "grp"),
                                       (world.other, "GRP")])
        padded = world.request("GET", "/api/v1/client-groups/grp%20%20", "alice")
        assert (padded.status, padded.error_code) == (400, "ERR_CODE_INVALID_CLIENT_GROUP_ID")
        assert _group(world, "alice", "GRP  ", {"client_id": ["*"]}) == 400
    finally:
        _drop_groups(world)


def test_group_reads_stay_exact_on_a_case_insensitive_table(world: World) -> None:
    """An operator's client_groups made case- and pad-insensitive: reads and deletes still
    compare tenant and id byte for byte."""
    if world.kind != "mysql":
        pytest.skip("SQLite compares TEXT byte for byte already")
    world.sql("ALTER TABLE client_groups CONVERT TO CHARACTER SET utf8mb4 "
              "COLLATE utf8mb4_general_ci")
    try:
        world.sql("INSERT INTO client_groups (tenant, id, description, params) "
                  "VALUES (?, ?, ?, ?)", ("J", "Grp", "", '{"client_id": ["*"]}'))
        assert _members(world, "alice", "Grp") == ["jonly", "x"]
        same_as_missing(world, "GET", "/api/v1/client-groups/grp", "/api/v1/client-groups/none")
        for user in ("gina", "nobody"):
            same_as_missing(world, "GET", "/api/v1/client-groups/Grp",
                            "/api/v1/client-groups/none", user)
            same_as_missing(world, "DELETE", "/api/v1/client-groups/Grp",
                            "/api/v1/client-groups/none", user)
            assert world.request("GET", "/api/v1/client-groups", user).json()["data"] == []
        same_as_missing(world, "DELETE", "/api/v1/client-groups/GRP",
                        "/api/v1/client-groups/none")
        assert world.sql("SELECT tenant, id FROM client_groups") == [("J", "Grp")]
    finally:
        _drop_groups(world)
        world.sql("ALTER TABLE client_groups CONVERT TO CHARACTER SET utf8mb4 "
                  "COLLATE utf8mb4_bin")


def test_tenantless_user_has_no_groups_and_cannot_make_one(world: World) -> None:
    world.sql("INSERT INTO client_groups (tenant, id, description, params) VALUES (?, ?, ?, ?)",
              ("", "orphans", "", '{"client_id": ["*"]}'))
    try:
        listing = world.request("GET", "/api/v1/client-groups", "nobody")
        assert (listing.status, listing.json()) == (200, {"data": [], "meta": {"count": 0}})
        same_as_missing(world, "GET", "/api/v1/client-groups/orphans",
                        "/api/v1/client-groups/none", "nobody")
        same_as_missing(world, "DELETE", "/api/v1/client-groups/orphans",
                        "/api/v1/client-groups/none", "nobody")
        for method in ("POST", "PUT"):
            made = _group(world, "nobody", "mine", {"client_id": ["*"]}, method)
            assert made == 403, method
        assert world.sql("SELECT tenant, id FROM client_groups") == [("", "orphans")]
    finally:
        _drop_groups(world)

# ---------------------------------------------------------------- remote commands and scripts


def _run(world: World, user: str, path: str, body: dict[str, object]) -> str:
    answer = world.request("POST", path, user, body=json.dumps(body).encode())
    assert answer.status == 200, answer.body
    return str(answer.json()["data"]["jid"])


def _job(world: World, user: str, client: str, jid: str) -> dict[str, object]:
    def ended() -> dict[str, object] | None:
        data = world.request("GET", f"/api/v1/clients/{client}/commands/{jid}", user).json()
        return data["data"] if data["data"]["status"] != "running" else None
    return dict(wait_for(ended, what=f"job {jid} of {user} on {client}"))


def test_jobs_are_the_callers_tenants_only(world: World) -> None:
    jid = _run(world, "alice", "/api/v1/clients/x/commands", {"command": "/usr/bin/printf J"})
    assert _job(world, "alice", "x", jid)["result"] == {"stdout": "J", "stderr": "",
                                                        "summary": ""}
    # gina's client "x" is another client: alice's job on J's "x" does not exist there
    same_as_missing(world, "GET", f"/api/v1/clients/x/commands/{jid}",
                    "/api/v1/clients/x/commands/00000000-0000-0000-0000-000000000000", "gina")
    same_as_missing(world, "GET", f"/api/v1/clients/jonly/commands/{jid}",
                    f"/api/v1/clients/nope/commands/{jid}", "gina")
    listed = world.request("GET", "/api/v1/clients/x/commands", "gina").json()["data"]
    assert jid not in [j["jid"] for j in listed]
    assert world.request("GET", "/api/v1/clients/jonly/commands", "gina").body == \
        world.request("GET", "/api/v1/clients/nope/commands", "gina").body
    for user in ("nobody", "gina"):
        assert world.request("GET", f"/api/v1/clients/x/commands/{jid}", user).status == 404
    theirs = _run(world, "gina", "/api/v1/clients/x/commands", {"command": "/usr/bin/printf G"})
    assert _job(world, "gina", "x", theirs)["result"]["stdout"] == "G"  # type: ignore[index]
    stored = world.sql("SELECT tenant FROM jobs WHERE jid IN (?, ?) ORDER BY tenant",
                       (jid, theirs))
    assert sorted(row[0] for row in stored) == sorted(["J", world.other])


def test_commands_on_another_tenants_client_answer_like_a_missing_one(world: World) -> None:
    command = json.dumps({"command": "/usr/bin/printf x"}).encode()
    script = json.dumps({"script": "ZWNobyB4"}).encode()
    for user, client in (("alice", "gonly"), ("alice", "o1"), ("nobody", "x")):
        same_as_missing(world, "POST", f"/api/v1/clients/{client}/commands",
                        "/api/v1/clients/nope/commands", user, body=command)
        same_as_missing(world, "POST", f"/api/v1/clients/{client}/scripts",
                        "/api/v1/clients/nope/scripts", user, body=script)
    assert world.sql("SELECT COUNT(*) FROM jobs WHERE client_id IN (?, ?)", ("gonly", "o1")) \
        == [(0,)]


def test_multi_client_command_naming_another_tenants_client_fails_like_a_missing_id(
        world: World) -> None:
    before = world.request("GET", "/api/v1/commands", "gina").body
    for path in ("/api/v1/commands", "/api/v1/scripts"):
        field = {"command": "/usr/bin/printf x"} if path.endswith("commands") else {
            "script": "ZWNobyB4"}
        theirs = json.dumps({**field, "client_ids": ["gonly", "jonly"]}).encode()
        missing = json.dumps({**field, "client_ids": ["gonly", "nope"]}).encode()
        one = world.request("POST", path, "gina", body=theirs)
        other = world.request("POST", path, "gina", body=missing)
        assert one.status == other.status == 404 and one.body == other.body
    assert world.request("GET", "/api/v1/commands", "gina").body == before
    jid = _run(world, "alice", "/api/v1/commands", {"command": "/usr/bin/printf m",
                                                    "client_ids": ["x", "jonly"]})
    wait_for(lambda: [j["status"] for j in world.request(
        "GET", f"/api/v1/commands/{jid}", "alice").json()["data"]["jobs"]] ==
        ["successful", "successful"], what="alice's multi-job")
    same_as_missing(world, "GET", f"/api/v1/commands/{jid}", "/api/v1/commands/none", "gina")
    same_as_missing(world, "GET", f"/api/v1/commands/{jid}", "/api/v1/commands/none", "nobody")
    assert jid not in world.request("GET", "/api/v1/commands", "gina").body.decode()
    assert world.request("GET", "/api/v1/commands", "nobody").json() == {"data": []}


async def test_ws_commands_streams_only_the_callers_tenant(world: World) -> None:
    import aiohttp

    async def exchange(user: str, request: dict[str, object]) -> list[object]:
        url = f"{world.rportd.api}/api/v1/ws/commands?access_token={world.token(user)}"
        async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
            await ws.send_str(json.dumps(request))
            return [json.loads(m.data) async for m in ws]

    theirs = await exchange("gina", {"command": "/usr/bin/printf x", "client_ids": ["jonly"]})
    missing = await exchange("gina", {"command": "/usr/bin/printf x", "client_ids": ["nope"]})
    assert theirs == missing and theirs[0]["errors"][0]["code"] == "ERR_CODE_CLIENT_NOT_FOUND"
    mine = await exchange("gina", {"command": "/usr/bin/printf g", "client_ids": ["x", "gonly"]})
    assert sorted(j["client_id"] for j in mine) == ["gonly", "x"]
    assert {j["result"]["stdout"] for j in mine} == {"g"}


def test_a_group_as_command_target_holds_only_the_callers_clients(world: World) -> None:
    made = world.request("POST", "/api/v1/client-groups", "alice",
                         body=b'{"id": "every-j", "params": {"client_id": ["*"]}}')
    assert made.status == 201, made.body
    try:
        jid = _run(world, "alice", "/api/v1/commands", {"command": "/usr/bin/printf g",
                                                        "group_ids": ["every-j"]})
        jobs = wait_for(lambda: (j := world.request(
            "GET", f"/api/v1/commands/{jid}", "alice").json()["data"]["jobs"]) and len(j) == 2
            and all(x["status"] != "running" for x in j) and j, what="the group's jobs")
        assert sorted(j["client_id"] for j in jobs) == ["jonly", "x"]  # not gonly, not o1
        theirs = json.dumps({"command": "/usr/bin/id", "group_ids": ["every-j"]}).encode()
        missing = json.dumps({"command": "/usr/bin/id", "group_ids": ["nope"]}).encode()
        for user in ("gina", "nobody"):
            one = world.request("POST", "/api/v1/commands", user, body=theirs)
            other = world.request("POST", "/api/v1/commands", user, body=missing)
            assert one.status == other.status == 404 and one.body == other.body
    finally:
        world.request("DELETE", "/api/v1/client-groups/every-j", "alice")

# ---------------------------------------------------------------- tenants and the operator (issue 10)


def _operator(world: World, method: str, path: str, body: bytes | None = None) -> Response:
    return http(world.rportd.api_port, method, path, token=OPERATOR_KEY, body=body)


def _concrete(path: str) -> str:
    path = path.replace("{name}", "J").replace("{id}", "x").replace("{tunnel_id}", "1")
    return re.sub(r"\{\w+\}", "v1", path)  # every other placeholder (jid, username, ...)


def test_tenant_users_get_nothing_from_operator_endpoints(world: World) -> None:
    token = world.token("alice")
    for route in (r for r in ROUTES if r.permission == "operator"):
        path = _concrete(route.path)
        answers = [world.request(route.method, path, user) for user in ("alice", "gina",
                                                                         "nobody")]
        answers.append(world.request(route.method, path, token=token))
        answers.append(world.request(route.method, path, "alice", body=b'{"name": "J"}'))
        for answer in answers:
            assert (answer.status, answer.error_code) == (401, "ERR_CODE_OPERATOR_KEY_REQUIRED")
        assert len({a.body for a in answers}) == 1, (route, answers)
    assert world.sql("SELECT name FROM tenants") == []  # nothing was created


def test_operator_key_reaches_no_tenant_endpoint(world: World) -> None:
    for route in (r for r in ROUTES if r.permission not in ("operator", "public")):
        answer = _operator(world, route.method, _concrete(route.path))
        assert (answer.status, answer.error_code) == (403, "ERR_CODE_OPERATOR_FORBIDDEN"), \
            (route, answer.body)
        assert b"jonly" not in answer.body and b"cj" not in answer.body


def _exact_count(world: World, table: str, tenant: str) -> int:
    quoted = f'"{table}"' if world.kind == "sqlite" else f"`{table}`"
    return sum(1 for (value,) in world.sql(f"SELECT tenant FROM {quoted}")
               if str(value).strip() == tenant)


def test_operator_counts_each_tenant_apart(world: World) -> None:
    listed = {t["name"]: t for t in _operator(world, "GET", "/api/v1/tenants").json()["data"]}
    assert {"J", world.other} <= set(listed)  # J and j stay two tenants on any collation
    for name in ("J", world.other):
        tenant = listed[name]
        assert not tenant["recorded"]  # named only by the operator's tables
        assert tenant["usage"]["credentials"] == _exact_count(world, "clients_auth", name)
        assert tenant["usage"]["users"] == _exact_count(world, "users", name)
        assert tenant["usage"]["clients_connected"] == 2
        one = _operator(world, "GET", f"/api/v1/tenants/{name}").json()["data"]
        assert one["usage"] == tenant["usage"]
    status = _operator(world, "GET", "/api/v1/operator/status").json()["data"]
    assert status["orphaned_clients_connected"] == 1
    missing = _operator(world, "GET", "/api/v1/tenants/nope")
    assert (missing.status, missing.error_code) == (404, "ERR_CODE_TENANT_NOT_FOUND")
    text = _operator(world, "GET", "/metrics").body.decode()
    assert 'rportd_tenant_clients_connected{tenant="J"} 2' in text
    assert f'rportd_tenant_clients_connected{{tenant="{world.other}"}} 2' in text
    assert 'rportd_orphaned_clients{state="connected"} 1' in text
    assert b"jonly" not in _operator(world, "GET", "/api/v1/tenants").body


def test_deleting_a_tenant_leaves_the_one_differing_in_case(world: World) -> None:
    quote = '"' if world.kind == "sqlite" else "`"
    for tenant, suffix in (("Zq", "upper"), ("zq", "lower")):
        world.sql("INSERT INTO clients_auth (id, password, tenant) VALUES (?, ?, ?)",
                  (f"zq-{suffix}", "secret", tenant))
        world.sql("INSERT INTO users (username, password, tenant) VALUES (?, ?, ?)",
                  (f"zq-{suffix}", "x", tenant))
        world.sql(f"INSERT INTO {quote}groups{quote} (username, {quote}group{quote}, tenant) "
                  "VALUES (?, ?, ?)", (f"zq-{suffix}", "Administrators", tenant))
    gone = _operator(world, "DELETE", "/api/v1/tenants/zq")
    assert gone.status == 200, gone.body
    assert gone.json()["data"]["removed"]["clients_auth"] == 1
    for table in ("clients_auth", "users", "groups"):
        assert _exact_count(world, table, "zq") == 0
        assert _exact_count(world, table, "Zq") == 1
    assert _operator(world, "GET", "/api/v1/tenants/Zq").status == 200
    assert _operator(world, "DELETE", "/api/v1/tenants/Zq").status == 200
    assert _operator(world, "GET", "/api/v1/tenants/Zq").status == 404

# ---------------------------------------------------------------- review: who the audit log names


def test_the_operators_writes_are_audited_apart_from_every_tenant(world: World) -> None:
    made = _operator(world, "POST", "/api/v1/tenants", b'{"name": "Audited1"}')
    assert made.status == 201, made.body
    try:
        entries = wait_for(lambda: _operator(
            world, "GET", "/api/v1/operator/auditlog?filter[username]=operator"
            "&filter[target]=Audited1").json()["data"], what="the operator's entry")
        assert [(e["tenant"], e["action"], e["target"], e["result"]) for e in entries] == [
            ("", "POST /api/v1/tenants", "Audited1", "success")]
        for user in ("alice", "gina", "nobody"):  # no tenant sees the operator's history
            answer = world.request("GET", "/api/v1/auditlog?filter[username]=operator", user)
            assert answer.status in (200, 403) and b"Audited1" not in answer.body
    finally:
        assert _operator(world, "DELETE", "/api/v1/tenants/Audited1").status == 200


async def test_a_command_run_through_the_websocket_is_audited(world: World) -> None:
    import aiohttp

    token = world.token("alice")
    url = f"{world.rportd.api}/api/v1/ws/commands?access_token={token}"
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        await ws.send_str(json.dumps({"command": "/usr/bin/printf a", "client_ids": ["jonly"]}))
        assert [json.loads(m.data)["client_id"] async for m in ws] == ["jonly"]
    query = "/api/v1/auditlog?filter[action]=GET%20/api/v1/ws/commands"
    entries = wait_for(lambda: world.request("GET", query, "alice").json()["data"],
                       what="the WebSocket's audit entry")
    assert [(e["tenant"], e["username"], e["result"]) for e in entries] == [
        ("J", "alice", "success")]
    assert token not in json.dumps(entries)  # the query's access_token is never recorded
    for user in ("gina", "nobody"):  # 403 (not an administrator) or nothing: never alice's
        assert b"alice" not in world.request("GET", query, user).body
