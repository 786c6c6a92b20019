"""A multi-tenant rportd with real agents, on SQLite or MariaDB, for the API tests.

Tenants J and G each have a user, a credential and clients (both own a client called "x"); user
`nobody` has no tenant; credential `corph` has no tenant, so its client is orphaned. On tables
from rport's case-insensitive DDL the second tenant is `j` instead of `G` (`other`), the case the
collation must not merge with J.
"""

from __future__ import annotations

import secrets
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
import pymysql

from .conftest import MYSQL_HOST, MYSQL_PASSWORD, MYSQL_PORT, MYSQL_USER
from .helpers import Response, http, write_config
from .processes import Agent, Rportd

PASSWORDS = {"alice": "alice-pw-1", "gina": "gina-pw-22", "nobody": "nobody-pw-3"}
CREDENTIALS = {"cj": ("cj-secret", "J"), "cg": ("cg-secret", "G"), "corph": ("co-secret", "")}
AGENTS = (("x", "cj"), ("jonly", "cj"), ("x", "cg"), ("gonly", "cg"), ("o1", "corph"))


def _hash(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()


def seed_sql(other: str = "G") -> list[tuple[str, list[tuple[Any, ...]]]]:
    """The world's rows, with `other` as the second tenant."""
    return [
        ("INSERT INTO users (username, password, tenant) VALUES (?, ?, ?)",
         [("alice", _hash(PASSWORDS["alice"]), "J"), ("gina", _hash(PASSWORDS["gina"]), other),
          ("nobody", _hash(PASSWORDS["nobody"]), "")]),
        ("INSERT INTO {groups} (username, {group}, tenant) VALUES (?, ?, ?)",
         [("alice", "Administrators", "J"), ("alice", "Sneaky", other), ("gina", "ops", other)]),
        ("INSERT INTO clients_auth (id, password, tenant) VALUES (?, ?, ?)",
         [(auth_id, secret, other if tenant == "G" else tenant)
          for auth_id, (secret, tenant) in CREDENTIALS.items()]),
    ]


SEED_SQL = seed_sql()


# rport's documented MySQL DDL (the seed's users and groups, and clients_auth as rport's client
# auth docs show it, with a tenant): utf8 with its default collation, so comparisons are case-
# and PAD SPACE-insensitive (`J` = `j`, `'bob  '` = `'bob'`). Operators' tables look like this.
SEED_MYSQL_DDL = (
    """CREATE TABLE `users` (
  `username` varchar(150) NOT NULL,
  `password` varchar(255) NOT NULL,
  `tenant` varchar(50) NOT NULL,
  UNIQUE KEY `username` (`username`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8""",
    """CREATE TABLE `groups` (
  `username` varchar(150) NOT NULL,
  `group` varchar(150) NOT NULL,
  `tenant` varchar(50) NOT NULL,
  UNIQUE KEY `username_group_tenant` (`username`,`group`,`tenant`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8""",
    """CREATE TABLE `clients_auth` (
  `id` varchar(100) NOT NULL,
  `password` varchar(100) NOT NULL,
  `tenant` varchar(50) NOT NULL,
  PRIMARY KEY (`id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8""",
)


def create_seed_tables(database: dict[str, object]) -> None:
    """The operator's auth tables from rport's DDL, made before `rportd migrate` adds ours."""
    conn = pymysql.connect(host=MYSQL_HOST, port=MYSQL_PORT, user=MYSQL_USER,
                           password=MYSQL_PASSWORD, database=str(database["db_name"]),
                           autocommit=True)
    try:
        with conn.cursor() as cursor:
            for statement in SEED_MYSQL_DDL:
                cursor.execute(statement)
    finally:
        conn.close()


@dataclass
class World:
    rportd: Rportd
    kind: str
    database: dict[str, object]
    agents: list[Agent]
    other: str = "G"

    def request(self, method: str, path: str, user: str | None = None, token: str | None = None,
                body: bytes | None = None, headers: dict[str, str] | None = None) -> Response:
        """A real HTTP request, as curl would send it."""
        basic = (user, PASSWORDS.get(user, "x")) if user is not None else None
        return http(self.rportd.api_port, method, path, basic=basic, token=token, body=body,
                    headers=headers)

    def token(self, user: str) -> str:
        return str(self.request("GET", "/api/v1/login", user).json()["data"]["token"])

    def sql(self, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if self.kind == "sqlite":
            with sqlite3.connect(str(self.database["db_name"])) as conn:
                return conn.execute(statement, params).fetchall()
        conn = pymysql.connect(host=MYSQL_HOST, port=MYSQL_PORT, user=MYSQL_USER,
                               password=MYSQL_PASSWORD, database=str(self.database["db_name"]),
                               autocommit=True)
        try:
            with conn.cursor() as cursor:
                cursor.execute(statement.replace("?", "%s"), params)
                return list(cursor.fetchall())
        finally:
            conn.close()

    def stop(self) -> None:
        for agent in self.agents:
            agent.stop()
        self.rportd.stop()


def create_mysql_database() -> str:
    name = "rportd_api_" + secrets.token_hex(5)
    conn = pymysql.connect(host=MYSQL_HOST, port=MYSQL_PORT, user=MYSQL_USER,
                           password=MYSQL_PASSWORD, autocommit=True)
    with conn.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE `{name}`")
    conn.close()
    return name


def drop_mysql_database(name: str) -> None:
    conn = pymysql.connect(host=MYSQL_HOST, port=MYSQL_PORT, user=MYSQL_USER,
                           password=MYSQL_PASSWORD, autocommit=True)
    with conn.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
    conn.close()


def build_world(tmp: Path, kind: str, database: dict[str, object],
                extra: dict[str, dict[str, object]] | None = None,
                seed: list[tuple[str, list[tuple[Any, ...]]]] | None = None,
                agents: tuple[tuple[str, str], ...] = AGENTS, other: str = "G") -> World:
    sections: dict[str, dict[str, object]] = {
        "server": {"auth_table": "clients_auth", "multi_tenancy": True},
        "api": {"auth_user_table": "users", "auth_group_table": "groups"},
        "database": database,
    }
    for section, values in (extra or {}).items():
        sections.setdefault(section, {}).update(values)
    rportd = Rportd(tmp, sections)
    migrate = write_config(tmp / "migrate.conf", {"server": {"allow_root": True,
                                                             "data_dir": str(tmp / "data")},
                                                  "database": database})
    subprocess.run([sys.executable, "-m", "rportd.cli", "migrate", "-c", str(migrate)],
                   check=True, capture_output=True)
    world = World(rportd, kind, database, [], other)
    quote = '"' if kind == "sqlite" else "`"
    for statement, rows in seed_sql(other) if seed is None else seed:
        sql = statement.format(groups=f"{quote}groups{quote}", group=f"{quote}group{quote}")
        for row in rows:
            world.sql(sql, row)
    try:
        rportd.start()
        for client_id, auth_id in agents:
            agent = Agent(tmp, rportd.url, f"{auth_id}:{CREDENTIALS[auth_id][0]}", "--id",
                          client_id, "--name", f"{client_id}@{auth_id}",
                          name=f"agent-{client_id}-{auth_id}")
            world.agents.append(agent.start())
        for agent in world.agents:
            agent.wait_connected()
    except BaseException:
        world.stop()  # a failed set-up leaves no process behind
        raise
    return world
