"""Identities and tenants compared exactly, whatever the table's collation: tenants `J` and `j`,
users `bob` / `bob  ` / `JADMIN`, a tenant stored as ' J ', on SQLite and on MariaDB tables made
from rport's own DDL (utf8: case- and PAD SPACE-insensitive)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from rportd.tenancy import normalize_tenant

from .api_world import World, _hash, build_world, create_seed_tables, drop_mysql_database
from .helpers import Response, http
from .processes import Agent
from .test_api_tenancy import _mysql_section

PASSWORDS = {"jadmin": "jadmin-pw-1", "jlower": "jlower-pw-2", "bob": "bob-pw-33",
             "spacey": "spacey-pw-4"}
SECRETS = {"J_K2": ("k2-secret", "J"), "jk": ("jk-secret", "j"), "spaced": ("sp-secret", " J ")}
SEED = [
    ("INSERT INTO users (username, password, tenant) VALUES (?, ?, ?)",
     [("jadmin", _hash(PASSWORDS["jadmin"]), "J"), ("jlower", _hash(PASSWORDS["jlower"]), "j"),
      ("bob", _hash(PASSWORDS["bob"]), "J"), ("spacey", _hash(PASSWORDS["spacey"]), " J")]),
    ("INSERT INTO {groups} (username, {group}, tenant) VALUES (?, ?, ?)",
     [("jadmin", "Administrators", "J"), ("jadmin", "Sneaky", "j"), ("JADMIN", "Upper", "J"),
      ("jlower", "ops", "j")]),
    ("INSERT INTO clients_auth (id, password, tenant) VALUES (?, ?, ?)",
     [(auth_id, secret, tenant) for auth_id, (secret, tenant) in SECRETS.items()]),
]


@pytest.fixture(scope="module", params=["sqlite",
                                        pytest.param("mysql-seed-ddl", marks=pytest.mark.mysql)])
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp(f"collation-{request.param}")
    if request.param == "sqlite":
        database: dict[str, object] = {"db_type": "sqlite", "db_name": str(tmp / "rportd.db")}
    else:
        database = _mysql_section()
        create_seed_tables(database)
    kind = "sqlite" if request.param == "sqlite" else "mysql"
    built = build_world(tmp, kind, database, seed=SEED, agents=())
    for client_id, auth_id in (("kx", "J_K2"), ("jx", "jk"), ("sx", "spaced")):
        agent = Agent(tmp, built.rportd.url, f"{auth_id}:{SECRETS[auth_id][0]}", "--id",
                      client_id, name=f"agent-{client_id}")
        built.agents.append(agent.start())
    for agent in built.agents:
        agent.wait_connected()
    try:
        yield built
    finally:
        built.stop()
        if kind == "mysql":
            drop_mysql_database(str(database["db_name"]))


def call(world: World, method: str, path: str, user: str, password: str | None = None) -> Response:
    secret = PASSWORDS.get(user, "x") if password is None else password
    return http(world.rportd.api_port, method, path, basic=(user, secret))


def listed(world: World, path: str, user: str) -> list[str]:
    return sorted(item["id"] for item in call(world, "GET", path, user).json()["data"])


def test_tenant_j_sees_and_deletes_nothing_of_tenant_upper_j(world: World) -> None:
    assert listed(world, "/api/v1/clients-auth", "jlower") == ["jk"]
    assert listed(world, "/api/v1/clients", "jlower") == ["jx"]
    theirs = call(world, "DELETE", "/api/v1/clients-auth/J_K2", "jlower")
    missing = call(world, "DELETE", "/api/v1/clients-auth/nothing", "jlower")
    assert theirs.status == missing.status == 404 and theirs.body == missing.body
    assert world.sql("SELECT id FROM clients_auth WHERE id = ?", ("J_K2",)) == [("J_K2",)]
    assert call(world, "GET", "/api/v1/clients/kx", "jlower").status == 404


def test_a_case_variant_of_an_id_deletes_nothing(world: World) -> None:
    assert call(world, "DELETE", "/api/v1/clients-auth/j_k2", "jadmin").status == 404
    assert call(world, "DELETE", "/api/v1/clients-auth/JK", "jlower").status == 404
    assert len(world.sql("SELECT id FROM clients_auth")) == 3


def test_usernames_match_byte_for_byte(world: World) -> None:
    assert call(world, "GET", "/api/v1/me", "JADMIN", PASSWORDS["jadmin"]).status == 401
    assert call(world, "GET", "/api/v1/me", "bob  ", PASSWORDS["bob"]).status == 401
    me = call(world, "GET", "/api/v1/me", "bob")
    assert me.status == 200 and me.json()["data"]["username"] == "bob"


def test_groups_come_only_from_the_exact_user_in_the_same_tenant(world: World) -> None:
    data = call(world, "GET", "/api/v1/me", "jadmin").json()["data"]
    assert (data["groups"], data["tenant"]) == (["Administrators"], "J")


def test_a_credential_with_a_blank_padded_tenant_belongs_to_that_tenant(world: World) -> None:
    assert listed(world, "/api/v1/clients-auth", "jadmin") == ["J_K2", "spaced"]
    clients = call(world, "GET", "/api/v1/clients", "jadmin").json()["data"]
    assert {c["id"]: c["tenant"] for c in clients} == {"kx": "J", "sx": "J"}


def test_a_user_with_a_blank_padded_tenant_is_in_that_tenant(world: World) -> None:
    assert call(world, "GET", "/api/v1/me", "spacey").json()["data"]["tenant"] == "J"
    assert listed(world, "/api/v1/clients", "spacey") == ["kx", "sx"]
    assert listed(world, "/api/v1/clients-auth", "spacey") == ["J_K2", "spaced"]


def test_an_agent_id_in_another_case_does_not_log_in(world: World, tmp_path: Path) -> None:
    agent = Agent(tmp_path, world.rportd.url, f"j_k2:{SECRETS['J_K2'][0]}", "--id", "case",
                  name="case").start()
    try:
        agent.wait_log("Authentication failed")
        assert "client: Connected" not in agent.log_text()
    finally:
        agent.stop()


@pytest.mark.parametrize("raw, tenant", [(None, ""), ("", ""), ("  ", ""), (0, ""), (7, "7"),
                                         (" J ", "J"), (b"j", "j")])
def test_one_normalisation_of_tenant_values(raw: object, tenant: str) -> None:
    assert normalize_tenant(raw) == tenant
