"""Permissions inside a tenant, scoped personal tokens, /users, /user-groups, /me and the audit
log, against real rportd processes and agents on SQLite and MariaDB.

Tenant J grants `Audit` `*:read` and `ops` clients, tunnels and credentials: audrey (Audit)
reads but cannot write, otto (ops) may tunnel. Tenant G grants nothing, so rport's defaults hold
there (gina may tunnel, not manage users); gadmin is G's administrator.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from rportd.api.app import ROUTES
from rportd.tenancy import tenant_tag

from .api_world import PASSWORDS, World, _hash, build_world, drop_mysql_database, seed_sql
from .helpers import Response
from .processes import wait_for
from .test_api_tenancy import _mysql_section

EXTRA = {"audrey": "audrey-pw-4", "otto": "otto-pw-55", "gadmin": "gadmin-pw-6"}
PASSWORDS.update(EXTRA)
GRANTS = (("J", "Audit", ["*:read"]),
          ("J", "ops", ["clients:*", "tunnels:*", "credentials:read"]))
TUNNEL = "/api/v1/clients/x/tunnels?remote=127.0.0.1:9&check_port=0"


def _seed() -> list[tuple[str, list[tuple[Any, ...]]]]:
    return [*seed_sql(), (
        "INSERT INTO users (username, password, tenant) VALUES (?, ?, ?)",
        [("audrey", _hash(EXTRA["audrey"]), "J"), ("otto", _hash(EXTRA["otto"]), "J"),
         ("gadmin", _hash(EXTRA["gadmin"]), "G")]), (
        "INSERT INTO {groups} (username, {group}, tenant) VALUES (?, ?, ?)",
        [("audrey", "Audit", "J"), ("otto", "ops", "J"), ("gadmin", "Administrators", "G")]), (
        "INSERT INTO group_permissions (tenant, {group}, permissions) VALUES (?, ?, ?)",
        [(t, g, json.dumps(p)) for t, g, p in GRANTS])]


@pytest.fixture(scope="module", params=["sqlite", pytest.param("mysql", marks=pytest.mark.mysql)])
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp(f"perm-{request.param}")
    database: dict[str, object] = (
        {"db_type": "sqlite", "db_name": str(tmp / "rportd.db")} if request.param == "sqlite"
        else _mysql_section())
    built = build_world(tmp, request.param, database, seed=_seed(),
                        agents=(("x", "cj"), ("x", "cg"), ("gonly", "cg")))
    try:
        yield built
    finally:
        built.stop()
        if request.param == "mysql":
            drop_mysql_database(str(database["db_name"]))


def body(data: object) -> bytes:
    return json.dumps(data).encode()


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", path)


def new_token(world: World, user: str, scopes: list[str], **extra: object) -> Response:
    return world.request("POST", "/api/v1/me/tokens", user,
                         body=body({"scopes": scopes, "name": "t", **extra}))


# ---------------------------------------------------------------- route permissions


def test_audit_user_reads_but_every_write_is_forbidden(world: World) -> None:
    for path in ("/api/v1/clients", "/api/v1/clients/x", "/api/v1/clients-auth",
                 "/api/v1/users", "/api/v1/user-groups", "/api/v1/auditlog"):
        assert world.request("GET", path, "audrey").status == 200, path
    writes = [r for r in ROUTES if r.permission.endswith(":write")]
    assert len(writes) >= 10
    for route in writes:
        refused = world.request(route.method, concrete(route.path), "audrey", body=b"{}")
        assert (refused.status, refused.error_code) == (403, "ERR_CODE_FORBIDDEN"), route
    # permission before lookup: own, another tenant's and a missing object answer alike
    answers = {world.request("DELETE", f"/api/v1/clients/{c}", "audrey").body
               for c in ("x", "gonly", "nope")}
    assert len(answers) == 1


def test_permissions_show_in_me_and_openapi(world: World) -> None:
    me = world.request("GET", "/api/v1/me", "audrey").json()["data"]
    assert me["tenant"] == "J" and me["groups"] == ["Audit"]
    assert all(p.endswith(":read") for p in me["permissions"]) and "users:read" in \
        me["permissions"]
    assert "users:write" in world.request("GET", "/api/v1/me", "alice").json()["data"][
        "permissions"]
    spec = world.request("GET", "/api/v1/openapi.json").json()
    assert spec["paths"]["/api/v1/clients/{id}"]["delete"]["x-rportd-permission"] == \
        "clients:write"
    assert "GET /api/v1/auditlog" in spec["x-rportd-permissions"]["read"]
    assert "PUT /api/v1/clients/{id}/tunnels" in spec["x-rportd-permissions"]["write"]


def test_tenant_without_grants_keeps_rports_defaults(world: World) -> None:
    made = world.request("PUT", TUNNEL, "gina")
    assert made.status == 200, made.body
    assert world.request("DELETE", f"/api/v1/clients/x/tunnels/{made.json()['data']['id']}",
                         "gina").status == 204
    for method, path in (("GET", "/api/v1/users"), ("GET", "/api/v1/auditlog")):
        assert world.request(method, path, "gina").error_code == "ERR_CODE_FORBIDDEN"
    assert world.request("GET", "/api/v1/users", "gadmin").status == 200


# ---------------------------------------------------------------- scoped tokens


def test_scoped_token_reads_but_cannot_tunnel(world: World) -> None:
    made = new_token(world, "otto", ["clients:read"])
    assert made.status == 201, made.body
    token = made.json()["data"]["token"]
    assert token.startswith("rpt_")
    assert world.request("GET", "/api/v1/clients", token=token).status == 200
    refused = world.request("PUT", TUNNEL, token=token)
    assert (refused.status, refused.error_code) == (403, "ERR_CODE_FORBIDDEN")
    me = world.request("GET", "/api/v1/me", token=token).json()["data"]
    assert me["permissions"] == ["clients:read"] and me["token"]["scopes"] == ["clients:read"]
    assert "tunnels:write" in me["account_permissions"]
    tunnel = world.request("PUT", TUNNEL, "otto")  # otto himself may
    assert tunnel.status == 200
    world.request("DELETE", f"/api/v1/clients/x/tunnels/{tunnel.json()['data']['id']}", "otto")
    listed = world.request("GET", "/api/v1/me/tokens", "otto")
    assert token not in listed.body.decode() and token[21:] not in listed.body.decode()
    stored = world.sql("SELECT secret_hash FROM api_tokens WHERE id = ?", (token[4:20],))
    assert token[21:] not in str(stored) and str(stored[0][0]).startswith("sha256:")


def test_token_cannot_widen_its_owners_rights(world: World) -> None:
    refused = new_token(world, "audrey", ["tunnels:write"])
    assert (refused.status, refused.error_code) == (403, "ERR_CODE_EXCEEDS_OWN_PERMISSIONS")
    star = new_token(world, "audrey", ["*"]).json()["data"]["token"]
    assert world.request("PUT", TUNNEL, token=star).status == 403
    assert all(p.endswith(":read") for p in
               world.request("GET", "/api/v1/me", token=star).json()["data"]["permissions"])
    # otto's token loses what otto loses, at once
    token = new_token(world, "otto", ["tunnels:write", "clients:read"]).json()["data"]["token"]
    assert world.request("PATCH", "/api/v1/users/otto", "alice",
                         body=body({"groups": ["Audit"]})).status == 204
    try:
        assert world.request("PUT", TUNNEL, token=token).error_code == "ERR_CODE_FORBIDDEN"
    finally:
        world.request("PATCH", "/api/v1/users/otto", "alice", body=body({"groups": ["ops"]}))
    made = world.request("PUT", TUNNEL, token=token)
    assert made.status == 200
    world.request("DELETE", f"/api/v1/clients/x/tunnels/{made.json()['data']['id']}", "otto")


def test_personal_tokens_cannot_mint_tokens_or_log_in(world: World) -> None:
    token = new_token(world, "otto", ["*"]).json()["data"]["token"]
    for method, path in (("POST", "/api/v1/me/tokens"), ("GET", "/api/v1/me/tokens")):
        answer = world.request(method, path, token=token, body=body({"scopes": ["*"]}))
        assert answer.error_code == "ERR_CODE_FORBIDDEN"
    assert world.request("GET", "/api/v1/login", token=token).status == 400
    assert world.request("DELETE", "/api/v1/login", token=token).status == 400
    assert world.request("GET", "/api/v1/me", token=token).status == 200  # still valid


def test_token_revoked_expired_or_owner_removed(world: World) -> None:
    created = world.request("POST", "/api/v1/users", "alice", body=body(
        {"username": "tmp", "password": "tmp-password-1", "groups": ["ops"]}))
    assert created.status == 201, created.body
    name = created.json()["data"]["username"]
    PASSWORDS[name] = "tmp-password-1"
    tokens = [new_token(world, name, ["clients:read"]).json()["data"] for _ in range(3)]
    for t in tokens:
        assert world.request("GET", "/api/v1/clients", token=t["token"]).status == 200
    assert world.request("DELETE", f"/api/v1/me/tokens/{tokens[0]['id']}", name).status == 204
    assert world.request("GET", "/api/v1/clients", token=tokens[0]["token"]).error_code == \
        "ERR_CODE_INVALID_TOKEN"
    world.sql("UPDATE api_tokens SET expires_at = ? WHERE id = ?",
              ("2020-01-01T00:00:00Z", tokens[1]["id"]))
    assert world.request("GET", "/api/v1/clients", token=tokens[1]["token"]).error_code == \
        "ERR_CODE_TOKEN_EXPIRED"
    assert world.request("DELETE", f"/api/v1/users/{name}", "alice").status == 204
    assert world.request("GET", "/api/v1/clients", token=tokens[2]["token"]).error_code == \
        "ERR_CODE_INVALID_TOKEN"
    assert world.sql("SELECT id FROM api_tokens WHERE username = ?", (name,)) == []


def test_recreated_user_and_new_password_end_old_tokens(world: World) -> None:
    def create() -> str:
        made = world.request("POST", "/api/v1/users", "alice", body=body(
            {"username": "again", "password": "first-password"}))
        assert made.status == 201, made.body
        return str(made.json()["data"]["username"])

    name = create()
    PASSWORDS[name] = "first-password"
    token = new_token(world, name, ["*"]).json()["data"]["token"]
    world.request("PUT", f"/api/v1/users/{name}", "alice",
                  body=body({"password": "second-password"}))
    assert world.request("GET", "/api/v1/me", token=token).error_code == "ERR_CODE_INVALID_TOKEN"
    PASSWORDS[name] = "second-password"
    token = new_token(world, name, ["*"]).json()["data"]["token"]
    world.sql("CREATE TABLE kept AS SELECT * FROM api_tokens WHERE id = ?", (token[4:20],))
    assert world.request("DELETE", f"/api/v1/users/{name}", "alice").status == 204
    world.sql("INSERT INTO api_tokens SELECT * FROM kept")  # a row outliving its user
    world.sql("DROP TABLE kept")
    assert create() == name  # re-created with the same password: a new account all the same
    assert world.request("GET", "/api/v1/me", token=token).error_code == "ERR_CODE_INVALID_TOKEN"
    world.request("DELETE", f"/api/v1/users/{name}", "alice")


def test_malformed_unknown_and_wrong_tokens_answer_alike(world: World) -> None:
    token = new_token(world, "otto", ["clients:read"]).json()["data"]["token"]
    wrong = token[:21] + ("A" if token[21] != "A" else "B") + token[22:]
    answers = [world.request("GET", "/api/v1/clients", token=t)
               for t in ("rpt_zz", "rpt_" + "0" * 16 + "_" + "A" * 43, wrong)]
    assert {a.status for a in answers} == {401} and len({a.body for a in answers}) == 1


def test_token_bad_input(world: World) -> None:
    for bad, code in (({"scopes": []}, "ERR_CODE_INVALID_PERMISSION"),
                      ({"scopes": ["clients:delete"]}, "ERR_CODE_INVALID_PERMISSION"),
                      ({"scopes": "clients:read"}, "ERR_CODE_INVALID_PERMISSION"),
                      ({"scopes": ["*"], "lifetime": 5}, "ERR_CODE_INVALID_LIFETIME"),
                      ({"scopes": ["*"], "name": 7}, "ERR_CODE_INVALID_REQUEST")):
        answer = world.request("POST", "/api/v1/me/tokens", "otto", body=body(bad))
        assert (answer.status, answer.error_code) == (400, code), bad
    not_json = world.request("POST", "/api/v1/me/tokens", "otto", body=b"[1")
    assert (not_json.status, not_json.error_code) == (400, "ERR_CODE_INVALID_JSON")
    missing = world.request("DELETE", "/api/v1/me/tokens/nothing", "otto")
    assert (missing.status, missing.error_code) == (404, "ERR_CODE_TOKEN_NOT_FOUND")


# ---------------------------------------------------------------- users and groups


def test_admin_manages_users_and_others_cannot(world: World) -> None:
    listed = world.request("GET", "/api/v1/users", "alice").json()["data"]
    assert {u["username"] for u in listed} >= {"alice", "audrey", "otto"}
    assert not {"gina", "gadmin", "nobody"} & {u["username"] for u in listed}
    assert b"$2" not in world.request("GET", "/api/v1/users", "alice").body
    created = world.request("POST", "/api/v1/users", "alice", body=body(
        {"username": "bob", "password": "bob-password", "groups": ["ops"]}))
    assert created.status == 201, created.body
    bob = created.json()["data"]["username"]
    assert bob == tenant_tag("J") + "_bob"
    PASSWORDS[bob] = "bob-password"
    assert world.request("GET", "/api/v1/me", bob).json()["data"]["groups"] == ["ops"]
    assert world.request("PUT", f"/api/v1/users/{bob}", "alice",
                         body=body({"password": "bob-new-password"})).status == 204
    assert world.request("GET", "/api/v1/me", bob).status == 401
    PASSWORDS[bob] = "bob-new-password"
    assert world.request("PATCH", f"/api/v1/users/{bob}", "alice",
                         body=body({"groups": ["Audit"]})).status == 204
    assert world.request("GET", "/api/v1/me", bob).json()["data"]["groups"] == ["Audit"]
    for user in ("otto", "audrey", "gina"):
        assert world.request("POST", "/api/v1/users", user, body=body(
            {"username": "evil", "password": "evil-password"})).error_code == \
            "ERR_CODE_FORBIDDEN"
        assert world.request("DELETE", f"/api/v1/users/{bob}", user).status in (403, 404)
    assert world.request("DELETE", f"/api/v1/users/{bob}", "alice").status == 204
    assert world.request("GET", "/api/v1/me", bob).status == 401
    itself = world.request("DELETE", "/api/v1/users/alice", "alice")
    assert (itself.status, itself.error_code) == (400, "ERR_CODE_CANNOT_DELETE_SELF")


def test_user_bad_input(world: World) -> None:
    for bad, code in (({"username": "a b", "password": "long-enough"}, "ERR_CODE_INVALID_USERNAME"),
                      ({"username": "ok"}, "ERR_CODE_INVALID_PASSWORD"),
                      ({"username": "ok", "password": "short"}, "ERR_CODE_INVALID_PASSWORD"),
                      ({"username": "ok", "password": "long-enough", "groups": "ops"},
                       "ERR_CODE_INVALID_GROUPS"),
                      ({"username": "x" * 150, "password": "long-enough"},
                       "ERR_CODE_INVALID_USERNAME")):
        answer = world.request("POST", "/api/v1/users", "alice", body=body(bad))
        assert (answer.status, answer.error_code) == (400, code), (bad, answer.body)
    assert world.request("PUT", "/api/v1/users/otto", "alice", body=b"{}").status == 400
    assert world.request("POST", "/api/v1/users", "alice", body=b"\"x\"").error_code == \
        "ERR_CODE_INVALID_JSON"


def test_no_escalation_through_user_management(world: World) -> None:
    assert world.request("PUT", "/api/v1/user-groups/helpdesk", "alice",
                         body=body({"permissions": ["users:*", "clients:read"]})).status == 200
    hd = world.request("POST", "/api/v1/users", "alice", body=body(
        {"username": "hd", "password": "helpdesk-pw", "groups": ["helpdesk"]}))
    name = hd.json()["data"]["username"]
    PASSWORDS[name] = "helpdesk-pw"
    try:
        for method, path, data in (
                ("POST", "/api/v1/users", {"username": "boss", "password": "boss-password",
                                           "groups": ["Administrators"]}),
                ("PUT", "/api/v1/users/alice", {"password": "taken-over!"}),
                ("PUT", "/api/v1/user-groups/helpdesk", {"permissions": ["*"]})):
            answer = world.request(method, path, name, body=body(data))
            assert answer.error_code == "ERR_CODE_EXCEEDS_OWN_PERMISSIONS", (path, answer.body)
        plain = world.request("POST", "/api/v1/users", name, body=body(
            {"username": "viewer", "password": "viewer-pw-1", "groups": ["helpdesk"]}))
        assert plain.status == 201
        world.request("DELETE", f"/api/v1/users/{plain.json()['data']['username']}", name)
    finally:
        world.request("DELETE", f"/api/v1/users/{name}", "alice")
        world.request("DELETE", "/api/v1/user-groups/helpdesk", "alice")


def test_a_scoped_token_cannot_widen_itself_through_user_management(world: World) -> None:
    """alice is an administrator; her token may only manage users. Making an administrator,
    resetting alice's password or granting `*` would hand its holder more than the token."""
    token = new_token(world, "alice", ["users:*"]).json()["data"]["token"]
    for method, path, data in (
            ("POST", "/api/v1/users", {"username": "boss2", "password": "boss-password",
                                       "groups": ["Administrators"]}),
            ("PUT", "/api/v1/users/alice", {"password": "taken-over!"}),
            ("PUT", "/api/v1/user-groups/widened", {"permissions": ["*"]})):
        answer = world.request(method, path, token=token, body=body(data))
        assert (answer.status, answer.error_code) == (
            403, "ERR_CODE_EXCEEDS_OWN_PERMISSIONS"), (path, answer.body)
    assert world.request("GET", "/api/v1/user-groups/widened", "alice").status == 404
    plain = world.request("POST", "/api/v1/users", token=token, body=body(
        {"username": "plain2", "password": "plain2-password"}))  # within the token: allowed
    assert plain.status == 201, plain.body
    name = plain.json()["data"]["username"]
    assert world.request("DELETE", f"/api/v1/users/{name}", token=token).status == 204


def test_user_groups_crud(world: World) -> None:
    listed = {g["name"]: g for g in world.request("GET", "/api/v1/user-groups",
                                                   "alice").json()["data"]}
    assert listed["Audit"]["permissions"] == ["*:read"] and listed["Administrators"][
        "permissions"] == ["*"]
    assert "Sneaky" not in listed  # alice's row naming tenant G
    put = world.request("PUT", "/api/v1/user-groups/viewers", "alice",
                        body=body({"permissions": ["clients:read", "clients:read"]}))
    assert put.status == 200 and put.json()["data"] == {"name": "viewers",
                                                        "permissions": ["clients:read"],
                                                        "members": 0}
    assert world.request("GET", "/api/v1/user-groups/viewers", "audrey").status == 200
    assert world.request("PUT", "/api/v1/user-groups/viewers", "otto", body=body(
        {"permissions": []})).error_code == "ERR_CODE_FORBIDDEN"
    assert world.request("DELETE", "/api/v1/user-groups/viewers", "alice").status == 204
    gone = world.request("GET", "/api/v1/user-groups/viewers", "alice")
    assert (gone.status, gone.error_code) == (404, "ERR_CODE_USER_GROUP_NOT_FOUND")
    fixed = world.request("PUT", "/api/v1/user-groups/Administrators", "alice",
                          body=body({"permissions": []}))
    assert (fixed.status, fixed.error_code) == (403, "ERR_CODE_USER_GROUP_FIXED")
    for bad in ({"permissions": ["root"]}, {"permissions": "*"}, {}):
        answer = world.request("PUT", "/api/v1/user-groups/v2", "alice", body=body(bad))
        assert (answer.status, answer.error_code) == (400, "ERR_CODE_INVALID_PERMISSION")
    assert world.request("GET", "/api/v1/user-groups/%20bad", "alice").error_code == \
        "ERR_CODE_INVALID_GROUPS"


def test_usernames_of_other_tenants_cannot_be_probed(world: World) -> None:
    """Both tenants create `carol`, and J creates names G holds: no conflict, no oracle."""
    j = world.request("POST", "/api/v1/users", "alice", body=body(
        {"username": "carol", "password": "carol-pw-j"}))
    g = world.request("POST", "/api/v1/users", "gadmin", body=body(
        {"username": "carol", "password": "carol-pw-g"}))
    assert j.status == g.status == 201
    names = [r.json()["data"]["username"] for r in (j, g)]
    assert names == [tenant_tag("J") + "_carol", tenant_tag("G") + "_carol"]
    for taken in ("gina", "gadmin", names[1]):
        made = world.request("POST", "/api/v1/users", "alice", body=body(
            {"username": taken, "password": "whatever-pw"}))
        assert made.status == 201, (taken, made.body)
        world.request("DELETE", f"/api/v1/users/{made.json()['data']['username']}", "alice")
    again = world.request("POST", "/api/v1/users", "alice", body=body(
        {"username": "carol", "password": "carol-pw-j"}))
    assert (again.status, again.error_code) == (409, "ERR_CODE_ALREADY_EXIST")  # own namespace
    world.request("DELETE", f"/api/v1/users/{names[0]}", "alice")
    world.request("DELETE", f"/api/v1/users/{names[1]}", "gadmin")


# ---------------------------------------------------------------- audit log


def _entries(world: World, user: str, query: str = "") -> list[dict[str, Any]]:
    answer = world.request("GET", f"/api/v1/auditlog?page[limit]=1000{query}", user)
    assert answer.status == 200, answer.body
    return list(answer.json()["data"])


def test_every_write_is_audited_without_secrets(world: World) -> None:
    world.request("POST", "/api/v1/clients-auth", "alice",
                  body=body({"id": "audited", "password": "credential-secret-1"}))
    world.request("POST", "/api/v1/users", "alice", body=body(
        {"username": "dave", "password": "dave-secret-pw"}))
    token = new_token(world, "alice", ["clients:read"]).json()["data"]["token"]
    world.request("DELETE", "/api/v1/clients/x", "audrey")
    wait_for(lambda: len(_entries(world, "alice", "&filter[username]=audrey"
                                                  "&filter[result]=ERR_CODE_FORBIDDEN")) > 0,
             what="audrey's refusal in the audit log")
    entries = wait_for(lambda: [e for e in _entries(world, "alice")
                                if e["action"] == "POST /api/v1/me/tokens"
                                and e["username"] == "alice"],
                       what="the token creation in the audit log")
    everything = _entries(world, "alice")
    actions = {(e["action"], e["result"]) for e in everything}
    assert ("POST /api/v1/clients-auth", "success") in actions
    assert ("POST /api/v1/users", "success") in actions
    assert ("DELETE /api/v1/clients/{id}", "ERR_CODE_FORBIDDEN") in actions
    refusal = next(e for e in everything if e["username"] == "audrey")
    assert (refusal["tenant"], refusal["target"], refusal["source"]) == ("J", "x", "127.0.0.1")
    assert entries[0]["target"] == token[4:20]
    dave = next(e for e in everything if e["action"] == "POST /api/v1/users"
                and "dave" in e["target"])
    assert dave["details"]["body"] == {"username": "dave"}
    raw = json.dumps(everything) + str(world.sql("SELECT * FROM audit_log"))
    for secret in ("credential-secret-1", "dave-secret-pw", token, token[21:]):
        assert secret not in raw
    assert all(e["tenant"] == "J" for e in everything)
    world.request("DELETE", f"/api/v1/users/{dave['target']}", "alice")


def test_each_write_route_leaves_an_entry(world: World) -> None:
    # POST /login authenticates nobody in advance: logins are not entries (the log has failures);
    # operator routes refuse a user's credentials before reading them (api/operator.py), so
    # audrey is nobody there, and a stranger's attempts are nobody's history
    writes = [r for r in ROUTES if r.method != "GET" and r.permission not in ("public", "operator")
              and (r.method, r.path) != ("POST", "/api/v1/login")]
    for route in writes:
        world.request(route.method, concrete(route.path), "audrey", body=b'{"password": "pw-1"}')

    def actions() -> set[str]:
        return {e["action"] for e in _entries(world, "alice", "&filter[username]=audrey")}

    expected = {f"{r.method} {r.path}" for r in writes}
    wait_for(lambda: expected <= actions(), what=lambda: f"{expected - actions()} audited")
    assert "pw-1" not in json.dumps(_entries(world, "alice", "&filter[username]=audrey"))


def test_auditlog_filters_pages_and_tenants(world: World) -> None:
    world.request("DELETE", "/api/v1/clients/gonly", "gina")  # connected: refused, but audited
    wait_for(lambda: _entries(world, "gadmin", "&filter[username]=gina"), what="gina's entry")
    assert _entries(world, "alice", "&filter[username]=gina") == []
    page = world.request("GET", "/api/v1/auditlog?page[limit]=1&sort=at", "alice").json()
    assert len(page["data"]) == 1 and page["meta"]["count"] >= 1
    assert _entries(world, "alice", "&filter[since]=2999-01-01") == []
    assert _entries(world, "alice", "&filter[until]=2000-01-01") == []
    assert world.request("GET", "/api/v1/auditlog", "nobody").error_code == "ERR_CODE_FORBIDDEN"
    for bad in ("filter[password]=x", "filter[since]=yesterday", "page[limit]=0",
                "page[limit]=x", "sort=id"):
        answer = world.request("GET", f"/api/v1/auditlog?{bad}", "alice")
        assert answer.status == 400 and answer.error_code.startswith("ERR_CODE_INVALID"), bad
