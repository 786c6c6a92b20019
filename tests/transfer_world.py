"""Servers for the tenant transfer tests: a migrated rportd (SQLite or MariaDB) not yet
started, its tables read back, and the `rportd tenant` command run as the operator runs it."""

from __future__ import annotations

import contextlib
import io
import os
import sqlite3
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
import pymysql

from rportd.cli import main

from .api_world import World, create_mysql_database
from .conftest import MYSQL_HOST, MYSQL_PASSWORD, MYSQL_PORT, MYSQL_USER
from .processes import Rportd

SEED = "transfer-test-key-seed"
OWN_TABLES = ("clients_auth", "users", "groups", "clients", "jobs", "multi_jobs", "client_groups",
              "tenants", "group_permissions", "api_tokens", "audit_log")


def bcrypt_hash(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()


def database_section(tmp: Path, kind: str) -> dict[str, object]:
    if kind == "sqlite":
        return {"db_type": "sqlite", "db_name": str(tmp / "rportd.db")}
    return {"db_type": "mysql", "db_host": f"{MYSQL_HOST}:{MYSQL_PORT}", "db_user": MYSQL_USER,
            "db_password": MYSQL_PASSWORD, "db_name": create_mysql_database()}


def target(tmp: Path, kind: str, key_seed: str = SEED, multi: bool = True,
           database: dict[str, object] | None = None) -> World:
    """A migrated multi-tenant rportd (credentials and users in its tables), not started."""
    tmp.mkdir(parents=True, exist_ok=True)
    database = database or database_section(tmp, kind)
    server: dict[str, object] = {"auth_table": "clients_auth", "multi_tenancy": multi,
                                 "keep_lost_clients": "168h"}
    if key_seed:
        server["key_seed"] = key_seed
    rportd = Rportd(tmp, {"server": server, "database": database,
                          "api": {"auth_user_table": "users", "auth_group_table": "groups"}})
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        # CREATE TABLE IF NOT EXISTS over operators' own tables: MySQL notes it as a warning
        warnings.simplefilter("ignore", pymysql.err.Warning)
        assert main(["migrate", "-c", str(rportd.config)]) == 0
    return World(rportd, kind, database, [])


def add_tenant(world: World, tenant: str, credential: tuple[str, str],
               user: tuple[str, str, str]) -> None:
    """A tenant already on the server: one credential, one user in one group."""
    q = '"' if world.kind == "sqlite" else "`"
    world.sql("INSERT INTO clients_auth (id, password, tenant) VALUES (?, ?, ?)",
              (*credential, tenant))
    world.sql("INSERT INTO users (username, password, tenant) VALUES (?, ?, ?)",
              (user[0], bcrypt_hash(user[1]), tenant))
    world.sql(f"INSERT INTO {q}groups{q} (username, {q}group{q}, tenant) VALUES (?, ?, ?)",
              (user[0], user[2], tenant))


def dump(world: World) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every tenant-owned table, sorted: the state an import must not half-change."""
    q = '"' if world.kind == "sqlite" else "`"
    return {table: sorted(world.sql(f"SELECT * FROM {q}{table}{q}"), key=repr)
            for table in OWN_TABLES}


@dataclass
class Done:
    returncode: int
    stderr: str


def tenant_cli(world: World, *args: str, process: bool = False, timeout: float = 60) -> Done:
    """`rportd tenant ARGS -c <the world's config>`, as an operator types it: in a process of
    its own, or (faster, the same code from `main` on) in this one."""
    argv = ["tenant", args[0], "-c", str(world.rportd.config), *args[1:]]
    if not process:
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = main(argv)
        return Done(code, err.getvalue())
    env = {k: v for k, v in os.environ.items() if not k.startswith("RPORTD_")}
    done = subprocess.run([sys.executable, "-m", "rportd.cli", *argv], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=world.rportd.tmp)
    return Done(done.returncode, done.stderr)


def integrity_ok(path: str) -> bool:
    with sqlite3.connect(path) as conn:
        return bool(conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok")
