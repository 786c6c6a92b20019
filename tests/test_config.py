"""Refuse-to-start rules: each runs the real rportd process and proves exit 1, one clear line on
stderr naming the setting, and that no port was bound."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from rportd.config import SETTINGS, build_config, example_config, parse_duration
from rportd.errors import ConfigError

from .conftest import mysql_execute
from .helpers import free_port, read_lines, run_rportd, write_config

ROOT = Path(__file__).resolve().parent.parent


def base(tmp_path: Path) -> dict[str, dict[str, object]]:
    return {
        "server": {"address": f"127.0.0.1:{free_port()}", "data_dir": str(tmp_path / "data"),
                   "allow_root": True},
        "api": {"address": f"127.0.0.1:{free_port()}", "auth": "admin:foobaz"},
        "logging": {"log_level": "info"},
    }


def merged(tmp_path: Path, changes: dict[str, dict[str, object]]) -> dict[str, dict[str, object]]:
    sections = base(tmp_path)
    for section, values in changes.items():
        sections.setdefault(section, {}).update(values)
        for key, value in list(sections[section].items()):
            if value is None:
                del sections[section][key]
    return sections


def assert_refused(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    # info-level log records (the tests run with log_level = "info") are not the error output
    lines = [line for line in result.stderr.splitlines()
             if not line.startswith("AUDIT-BIND") and not re.match(r"^\d{4}-.* INFO ", line)]
    assert result.returncode == 1, result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("rportd: config error: "), lines[0]
    for needle in needles:
        assert needle in lines[0]
    assert "AUDIT-BIND" not in result.stderr, "a port was bound before the refusal"


def refuse(tmp_path: Path, changes: dict[str, dict[str, object]], *needles: str,
           env: dict[str, str] | None = None) -> None:
    path = write_config(tmp_path / "rportd.conf", merged(tmp_path, changes))
    assert_refused(run_rportd(["-c", str(path)], cwd=tmp_path, env=env), *needles)


SQLITE = {"db_type": "sqlite"}

RULES = {
    "two_client_auth_sources": ({"server": {"auth": "a:b", "auth_file": "/x.json"}},
                                ("[server] auth, auth_file", "only one")),
    "two_user_auth_sources": ({"api": {"auth_file": "/users.json"}},
                              ("[api] auth, auth_file", "only one")),
    "user_table_without_group_table": (
        {"api": {"auth": None, "auth_user_table": "users"}, "database": SQLITE},
        ("[api] auth_group_table", "required")),
    "table_auth_without_db_type": ({"server": {"auth_table": "clients_auth"}},
                                   ("[database] db_type", "[server] auth_table")),
    "unknown_db_type": ({"database": {"db_type": "postgres", "db_name": "x"}},
                        ("[database] db_type", "postgres")),
    "malformed_client_auth": ({"server": {"auth": "nopassword"}}, ("[server] auth", "id:password")),
    "malformed_api_auth": ({"api": {"auth": "admin:"}}, ("[api] auth", "id:password")),
    "cert_without_key": ({"api": {"cert_file": "/c.pem"}}, ("[api] key_file", "together")),
    "key_without_cert": ({"api": {"key_file": "/k.pem"}}, ("[api] cert_file", "together")),
    "keep_lost_clients_too_long": ({"server": {"keep_lost_clients": "169h"}},
                                   ("[server] keep_lost_clients", "168h")),
    "keep_lost_clients_too_short": ({"server": {"keep_lost_clients": "500ms"}},
                                    ("[server] keep_lost_clients", "1s")),
    "keep_lost_clients_not_duration": ({"server": {"keep_lost_clients": "1x"}},
                                       ("[server] keep_lost_clients", "not a duration")),
    "check_port_timeout_over_1m": ({"server": {"check_port_timeout": "61s"}},
                                   ("[server] check_port_timeout", "1m")),
    "excluded_ports_not_ports": ({"server": {"excluded_ports": ["1-1024", "http"]}},
                                 ("[server] excluded_ports", "'http'")),
    "excluded_ports_reversed": ({"server": {"excluded_ports": ["2000-1000"]}},
                                ("[server] excluded_ports", "low-high")),
    "invalid_log_level": ({"logging": {"log_level": "verbose"}}, ("[logging] log_level", "verbose")),
    "doc_root_without_api": ({"api": {"address": None, "auth": None, "doc_root": "/srv"}},
                             ("[api] doc_root", "[api] address")),
    "table_name_not_identifier": (
        {"server": {"auth_table": "clients; DROP TABLE users"}, "database": SQLITE},
        ("[server] auth_table", "identifier")),
    "multi_tenancy_without_tables": ({"server": {"multi_tenancy": True}},
                                     ("[server] auth_table", "[api] auth_user_table",
                                      "multi_tenancy")),
}


@pytest.mark.parametrize("rule", sorted(RULES))
def test_refuses_to_start(tmp_path: Path, rule: str) -> None:
    changes, needles = RULES[rule]
    if "database" in changes and changes["database"].get("db_type") == "sqlite":
        changes["database"] = {"db_type": "sqlite", "db_name": str(tmp_path / "auth.db")}
    refuse(tmp_path, changes, *needles)


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    refuse(tmp_path, {}, "RPORTD_SERVER_KEEP_LOST_CLIENTS", "168h",
           env={"RPORTD_SERVER_KEEP_LOST_CLIENTS": "500h"})


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root")
def test_refuses_root_without_allow_root(tmp_path: Path) -> None:
    refuse(tmp_path, {"server": {"allow_root": None}}, "[server] allow_root", "allow_root = true")


def test_unreadable_and_invalid_toml_files(tmp_path: Path) -> None:
    assert_refused(run_rportd(["-c", str(tmp_path / "missing.conf")], cwd=tmp_path), "-c",
                   "cannot read")
    bad = tmp_path / "bad.conf"
    bad.write_text("[server\naddress = 1")
    assert_refused(run_rportd(["-c", str(bad)], cwd=tmp_path), "not valid TOML")


def _tenancy_sections(tmp_path: Path, db: dict[str, object]) -> dict[str, dict[str, object]]:
    return {"server": {"auth_table": "clients_auth", "multi_tenancy": True},
            "api": {"auth": None, "auth_user_table": "users", "auth_group_table": "groups"},
            "database": db}


def _sqlite_db(tmp_path: Path, *statements: str) -> dict[str, object]:
    path = tmp_path / "auth.db"
    with sqlite3.connect(path) as conn:
        for statement in statements:
            conn.execute(statement)
    return {"db_type": "sqlite", "db_name": str(path)}


GOOD_SQLITE_TABLES = (
    "CREATE TABLE clients_auth (id TEXT PRIMARY KEY, password TEXT, tenant TEXT NOT NULL)",
    "CREATE TABLE groups (username TEXT, \"group\" TEXT, tenant TEXT)",
)


def test_multi_tenancy_refuses_table_without_tenant_column_sqlite(tmp_path: Path) -> None:
    db = _sqlite_db(tmp_path, *GOOD_SQLITE_TABLES,
                    "CREATE TABLE users (username TEXT, password TEXT)")
    refuse(tmp_path, _tenancy_sections(tmp_path, db), "[api] auth_user_table", "'users'", "tenant")


def test_multi_tenancy_refuses_missing_table_sqlite(tmp_path: Path) -> None:
    db = _sqlite_db(tmp_path, *GOOD_SQLITE_TABLES)
    refuse(tmp_path, _tenancy_sections(tmp_path, db), "[api] auth_user_table", "does not exist")


def test_multi_tenancy_lists_duplicate_usernames_sqlite(tmp_path: Path) -> None:
    db = _sqlite_db(tmp_path, *GOOD_SQLITE_TABLES,
                    "CREATE TABLE users (username TEXT, password TEXT, tenant TEXT)",
                    "INSERT INTO users VALUES ('alice', 'x', 'J'), ('alice', 'y', 'G'), "
                    "('bob', 'z', 'J')")
    refuse(tmp_path, _tenancy_sections(tmp_path, db), "[api] auth_user_table", "'alice'", "unique")


@pytest.mark.mysql
def test_multi_tenancy_refuses_table_without_tenant_column_mysql(
        tmp_path: Path, mysql_db: str, mysql_database_section: dict[str, object]) -> None:
    mysql_execute(mysql_db,
                  "CREATE TABLE clients_auth (id VARCHAR(100) PRIMARY KEY, password VARCHAR(255), "
                  "tenant INT NOT NULL)",
                  "CREATE TABLE users (username VARCHAR(150), password VARCHAR(255), "
                  "tenant VARCHAR(50))",
                  "CREATE TABLE `groups` (username VARCHAR(150), `group` VARCHAR(150))")
    refuse(tmp_path, _tenancy_sections(tmp_path, mysql_database_section),
           "[api] auth_group_table", "'groups'", "tenant")


@pytest.mark.mysql
def test_configured_database_with_pending_migrations_is_refused(
        tmp_path: Path, mysql_database_section: dict[str, object]) -> None:
    refuse(tmp_path, {"database": mysql_database_section}, "[database]", "rportd migrate")


def test_unreachable_mysql_is_one_clear_line(tmp_path: Path) -> None:
    db = {"db_type": "mysql", "db_host": f"127.0.0.1:{free_port()}", "db_name": "x"}
    path = write_config(tmp_path / "rportd.conf", merged(tmp_path, {"database": db}))
    result = run_rportd(["-c", str(path)], cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("rportd: database error: cannot connect to MySQL")
    assert "AUDIT-BIND" not in result.stderr


def test_valid_config_starts_and_binds_both_ports(tmp_path: Path) -> None:
    sections = base(tmp_path)
    path = write_config(tmp_path / "rportd.conf", sections)
    from .helpers import _BIND_REPORTER

    proc = subprocess.Popen([sys.executable, "-c", _BIND_REPORTER, "-c", str(path)],
                            cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    try:
        seen = read_lines(proc, lambda lines: sum("AUDIT-BIND" in x for x in lines) >= 2)
        ports = {str(sections["server"]["address"]).rpartition(":")[2],
                 str(sections["api"]["address"]).rpartition(":")[2]}
        assert {p for p in ports if any(p in line for line in seen)} == ports, seen
    finally:
        proc.terminate()
        proc.wait(10)
        assert proc.stderr is not None
        proc.stderr.close()


def test_unknown_keys_warn_by_name() -> None:
    config = build_config({"server": {"allow_root": True, "adress": "x"}, "bogus": {"k": 1}}, {})
    assert any("[server] adress" in w for w in config.warnings)
    assert any("[bogus] k" in w for w in config.warnings)


def test_defaults_are_rports() -> None:
    config = build_config({"server": {"allow_root": True}}, {})
    assert config.server.address == "0.0.0.0:8080"
    assert [(r.first, r.last) for r in config.server.excluded_ports] == [(1, 1024)]
    assert config.server.keep_lost_clients == 3600
    assert config.server.max_request_bytes == 10240  # openrport's, for API bodies
    assert config.server.max_request_bytes_client == 512 * 1024
    assert config.server.check_port_timeout == 2


@pytest.mark.parametrize("text, seconds", [("1h", 3600), ("5s", 5), ("90m", 5400),
                                           ("1h30m", 5400), ("500ms", 0.5), ("0", 0)])
def test_durations_accept_rports_forms(text: str, seconds: float) -> None:
    assert parse_duration(text, "x") == seconds


def test_config_errors_name_the_setting() -> None:
    with pytest.raises(ConfigError) as info:
        build_config({"server": {"allow_root": True, "max_request_bytes": "lots"}}, {})
    assert info.value.setting == "[server] max_request_bytes"


def test_every_setting_is_in_the_example_config() -> None:
    example = (ROOT / "rportd.example.conf").read_text()
    missing = [f"[{s.section}] {s.key}" for s in SETTINGS if f"#{s.key} =" not in example]
    assert not missing, f"undocumented in rportd.example.conf: {missing}"
    assert example == example_config(), "regenerate: python -m rportd.config > rportd.example.conf"


def test_unreadable_auth_file_refuses_the_start(tmp_path: Path) -> None:
    broken = tmp_path / "clients.json"
    broken.write_text("{not json")
    refuse(tmp_path, {"server": {"auth_file": str(broken)}}, "[server] auth_file", "cannot read")
    refuse(tmp_path, {"api": {"auth": None, "auth_file": str(tmp_path / "missing.json")}},
           "[api] auth_file", "cannot read")


SECRETS = {("server", "key_seed"), ("server", "auth"), ("api", "auth"), ("api", "jwt_secret"),
           ("api", "operator_key"), ("database", "db_password")}


@pytest.mark.parametrize("where", sorted(SECRETS), ids=lambda w: f"{w[0]}.{w[1]}")
def test_a_secret_of_the_wrong_type_is_refused_without_being_shown(where: tuple[str, str]
                                                                   ) -> None:
    """A number where a string belongs (`db_password = 98765432123`, unquoted) is an easy
    mistake; the refusal goes to stderr and the journal, so it names the key, not the value."""
    section, key = where
    for value in (98765432123, ["98765432123"]):
        with pytest.raises(ConfigError) as refused:
            build_config({section: {key: value}}, {}, embedded=True)
        assert f"[{section}] {key}" in str(refused.value)
        assert "98765432123" not in str(refused.value), str(refused.value)


def test_a_numeric_db_password_is_one_line_without_it(tmp_path: Path) -> None:
    config = write_config(tmp_path / "rportd.conf", merged(tmp_path, {
        "database": {"db_type": "mysql", "db_password": 98765432123}}))
    result = run_rportd(["-c", str(config)], cwd=tmp_path)
    assert_refused(result, "[database] db_password")
    assert "98765432123" not in result.stderr
