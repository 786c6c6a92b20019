"""Schemathesis against /api/v1/openapi.json of a real rportd, as an authenticated user: every
check, a bounded number of examples and a time budget; 0 server errors, 0 schema violations."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from rportd.api.openapi import openapi_spec

from .helpers import http, write_config
from .processes import Rportd

ADMIN = ("admin", "foobaz")
# ignored_auth probes every operation with one fixed invalid basic credential; the login
# throttle answers 429 after 5 failures for a name (by design: tests/test_api.py), which that
# check counts as a failure. Its intent is test_every_secured_operation_refuses_bad_credentials.
CHECKS = ["--checks", "all", "--exclude-checks", "ignored_auth"]
# DELETE /login would revoke the token the run authenticates with (tested in tests/test_api.py);
# /ws/commands is a WebSocket, whose plain GET is a 400 by design (tests/test_commands.py).
EXCLUDED = ["--exclude-operation-id", "logout", "--exclude-operation-id", "commandsWebSocket"]
# This server's one user comes from [api] auth: writes to /users answer 405 ERR_CODE_USERS_RO by
# design (tests/test_api_permissions_single.py); table users are exercised in test_api_permissions.
EXCLUDED += [arg for op in ("createUser", "updateUser", "patchUser", "deleteUser")
             for arg in ("--exclude-operation-id", op)]
# POST /clients-auth runs apart: it writes rows, and its bad passwords (over 72 bytes, NUL) are 400s.
CREDENTIALS = ["--include-operation-id", "createClientCredential"]
# The operator endpoints run apart, with the operator key, on a multi-tenant rportd.
OPERATOR = ["--include-tag", "operator"]
OPERATOR_KEY = "fuzz-operator-key-" + "f" * 32


@pytest.fixture(scope="module")
def rportd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rportd]:
    tmp = tmp_path_factory.mktemp("fuzz")
    database = {"db_type": "sqlite", "db_name": str(tmp / "rportd.db")}
    migrate = write_config(tmp / "migrate.conf", {
        "server": {"allow_root": True, "data_dir": str(tmp / "data")}, "database": database})
    subprocess.run([sys.executable, "-m", "rportd.cli", "migrate", "-c", str(migrate)],
                   check=True, capture_output=True)
    server = Rportd(tmp, {"server": {"auth_table": "clients_auth"},
                          "api": {"auth": "admin:foobaz"}, "database": database}).start()
    # One token for every run, taken before any fuzzing: generated logins as "admin" fail and
    # ban the (admin, 127.0.0.1) pair by design; tokens are never throttled.
    login = http(server.api_port, "GET", "/api/v1/login?token-lifetime=3600", basic=ADMIN)
    assert login.status == 200, login.body
    server.token = login.json()["data"]["token"]  # type: ignore[attr-defined]
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tenant_rportd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rportd]:
    tmp = tmp_path_factory.mktemp("fuzz-tenants")
    database = {"db_type": "sqlite", "db_name": str(tmp / "rportd.db")}
    migrate = write_config(tmp / "migrate.conf", {
        "server": {"allow_root": True, "data_dir": str(tmp / "data")}, "database": database})
    subprocess.run([sys.executable, "-m", "rportd.cli", "migrate", "-c", str(migrate)],
                   check=True, capture_output=True)
    server = Rportd(tmp, {"server": {"auth_table": "clients_auth", "multi_tenancy": True},
                          "api": {"auth_user_table": "users", "auth_group_table": "groups",
                                  "operator_key": OPERATOR_KEY},
                          "database": database}).start()
    server.token = ""  # type: ignore[attr-defined]
    yield server
    server.stop()


def schemathesis(rportd: Rportd, *selection: str) -> subprocess.CompletedProcess[str]:
    token = rportd.token  # type: ignore[attr-defined]
    config = rportd.tmp / "schemathesis.toml"
    config.write_text(f'[auth.openapi.bearer]\nbearer = "{token}"\n'
                      f'[auth.openapi.operator]\nbearer = "{OPERATOR_KEY}"\n')
    st = shutil.which("st", path=str(Path(sys.executable).parent))
    assert st, "schemathesis is not installed: pip install -e '.[test]'"
    command = [st, "--config-file", str(config), "--no-color", "run",
               f"{rportd.api}/api/v1/openapi.json", *CHECKS, *selection,
               "--max-examples", "8", "--max-time", "12", "--seed", "1", "--no-shrink",
               "--request-timeout", "10", "--workers", "2", "--report-dir", str(rportd.tmp)]
    return subprocess.run(command, capture_output=True, text=True, timeout=100,
                          cwd=rportd.tmp)


def assert_clean(result: subprocess.CompletedProcess[str], rportd: Rportd) -> None:
    report = result.stdout[-6000:] + result.stderr[-2000:]
    assert result.returncode == 0, report
    assert "Traceback" not in rportd.log_text(), rportd.log_text()[-4000:]


def test_schemathesis_finds_nothing(rportd: Rportd) -> None:
    assert_clean(schemathesis(rportd, *EXCLUDED, "--exclude-operation-id",
                              "createClientCredential", "--exclude-tag", "operator"), rportd)


def test_schemathesis_on_credential_creation(rportd: Rportd) -> None:
    assert_clean(schemathesis(rportd, *CREDENTIALS), rportd)


def test_schemathesis_on_operator_endpoints(tenant_rportd: Rportd) -> None:
    assert_clean(schemathesis(tenant_rportd, *OPERATOR), tenant_rportd)


def test_every_secured_operation_refuses_bad_credentials(rportd: Rportd) -> None:
    spec = openapi_spec()
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            if operation.get("security") == []:
                continue
            concrete = path.replace("{id}", "x").replace("{tunnel_id}", "t")
            for auth in ({}, {"token": "not.a.token"}):
                answer = http(rportd.api_port, method.upper(), concrete, **auth)  # type: ignore[arg-type]
                assert answer.status == 401, (method, path, auth, answer.body)
