"""`export --then-delete` and the operator's `DELETE /api/v1/tenants/{name}` remove the same rows:
every table the tenant owns, and in the operator's tables every row rportd counts as the
tenant's (a tenant value with blanks around it is the tenant: `tenancy.normalize_tenant`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rportd.tenant_admin import OWN_TENANT_TABLES
from rportd.transfer.tables import TABLES

from .api_world import World, create_mysql_database, create_seed_tables, drop_mysql_database
from .conftest import MYSQL_HOST, MYSQL_PASSWORD, MYSQL_PORT, MYSQL_USER, require_mysql
from .helpers import http
from .test_transfer_roundtrip import EXTRA
from .transfer_world import OWN_TABLES, add_tenant, target, tenant_cli

KEY = "operator-key-for-the-delete-test-0123456789"


def _q(world: World) -> str:
    return '"' if world.kind == "sqlite" else "`"


def _fill(world: World) -> None:
    for tenant, credential, user in (("J", ("cj", "cj-pw"), ("alice", "alice-pw", "admins")),
                                     ("G", ("cg", "cg-pw"), ("gina", "gina-pw", "ops"))):
        add_tenant(world, tenant, credential, user)
        for table, (columns, marks, values) in EXTRA.items():
            names = columns.format(group=f"{_q(world)}group{_q(world)}")
            world.sql(f"INSERT INTO {table} ({names}) VALUES ({marks})", values(tenant))
        world.sql("INSERT INTO clients (tenant, id, client_auth_id, details, tunnels) VALUES "
                  "(?, 'x', ?, '{}', '[]')", (tenant, credential[0]))
    # written by an operator's own tool: rportd reads it as tenant J's credential
    world.sql("INSERT INTO clients_auth (id, password, tenant) VALUES ('cpad', 'pw', ' J ')")


def _left(world: World) -> dict[str, list[Any]]:
    """Rows of tenant J (as rportd reads tenant values) still there, by table."""
    left = {}
    for table in OWN_TABLES:
        column = "name" if table == "tenants" else "tenant"
        q = _q(world)
        rows = world.sql(f"SELECT * FROM {q}{table}{q} WHERE BINARY TRIM({column}) = 'J'"
                         if world.kind == "mysql" else
                         f"SELECT * FROM {q}{table}{q} WHERE TRIM({column}) = 'J'")
        if rows:
            left[table] = rows
    return left


def _g_rows(world: World) -> dict[str, list[Any]]:
    rows = {}
    for table in OWN_TABLES:
        column = "name" if table == "tenants" else "tenant"
        q = _q(world)
        rows[table] = sorted(world.sql(f"SELECT * FROM {q}{table}{q} WHERE {column} = 'G'"),
                             key=repr)
    return rows


def test_one_list_of_tenant_tables() -> None:
    own = {t.table for t in TABLES if not t.operators}
    assert own == {*OWN_TENANT_TABLES, "tenants", "api_tokens"}


@pytest.fixture(params=["sqlite", pytest.param("mysql", marks=pytest.mark.mysql)])
def databases(request: pytest.FixtureRequest, tmp_path: Path
              ) -> Iterator[tuple[str, list[dict[str, object]]]]:
    """Two databases alike: SQLite files, or MariaDB ones with the operator's tables made from
    rport's case- and pad-insensitive DDL."""
    if request.param == "sqlite":
        yield "sqlite", [{"db_type": "sqlite", "db_name": str(tmp_path / f"{n}.db")}
                         for n in ("export", "operator")]
        return
    require_mysql().close()
    made: list[dict[str, object]] = [
        {"db_type": "mysql", "db_host": f"{MYSQL_HOST}:{MYSQL_PORT}", "db_user": MYSQL_USER,
         "db_password": MYSQL_PASSWORD, "db_name": create_mysql_database()} for _ in range(2)]
    try:
        for database in made:
            create_seed_tables(database)
        yield "mysql", made
    finally:
        for database in made:
            drop_mysql_database(str(database["db_name"]))


def test_then_delete_and_the_operators_delete_remove_the_same(
        tmp_path: Path, databases: tuple[str, list[dict[str, object]]]) -> None:
    kind, (first, second) = databases
    exported = target(tmp_path / "export", kind, database=first)
    _fill(exported)
    kept = _g_rows(exported)
    done = tenant_cli(exported, "export", "--tenant", "J", "--out", str(tmp_path / "J.archive"),
                      "--then-delete")
    assert done.returncode == 0, done.stderr
    assert b'"cpad"' in (tmp_path / "J.archive").read_bytes(), "the padded row is J's too"

    operator = target(tmp_path / "operator", kind, database=second)
    config = operator.rportd.config
    config.write_text(config.read_text().replace("[api]\n", f'[api]\noperator_key = "{KEY}"\n'))
    _fill(operator)
    operator.rportd.start()
    try:
        answer = http(operator.rportd.api_port, "DELETE", "/api/v1/tenants/J?force=true",
                      token=KEY)
        assert answer.status == 200, answer.body
    finally:
        operator.rportd.stop()
    assert _left(operator) == {}
    assert _left(exported) == {}, "--then-delete left rows the operator's delete removes"
    assert _g_rows(exported) == kept
