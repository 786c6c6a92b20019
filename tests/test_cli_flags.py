"""rportd's flags, generated from the settings table: every flag reaches its setting exactly as
the file's key does, precedence flag > environment > file > default, --help lists each flag with
its default and environment variable, every refuse-to-start rule names the flag that broke it,
rport's unneeded flags warn, and README's table matches the settings table."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from rportd.cli import _parser as parser
from rportd.config import SETTINGS, Config, Setting, build_config, env_name, flag_name
from rportd.errors import ConfigError
from rportd.flags import (
    ALIASES,
    RPORT_FLAGS,
    bool_flag_names,
    default_text,
    expand_bool_flags,
    flag_table,
    ignored_flags,
    ignored_names,
    setting_flags,
)

from .helpers import free_port, run_rportd
from .test_config import RULES, assert_refused, merged

ROOT = Path(__file__).resolve().parent.parent
BY_KEY = {(s.section, s.key): s for s in SETTINGS}
DB = {("database", "db_type"): "sqlite", ("database", "db_name"): "/tmp/rportd-flags.db"}
TABLES = {("server", "auth_table"): "clients_auth", ("api", "auth_user_table"): "users",
          ("api", "auth_group_table"): "groups", **DB}

# A value for settings whose generic sample would break a rule, and what must come with it.
SAMPLES: dict[tuple[str, str], Any] = {
    ("server", "address"): "127.0.0.1:9999", ("api", "address"): "127.0.0.1:9998",
    ("server", "auth"): "c1:pw", ("api", "auth"): "admin:pw",
    ("server", "auth_table"): "clients_auth", ("api", "auth_user_table"): "users",
    ("api", "auth_group_table"): "groups", ("server", "excluded_ports"): ["22", "2000-2100"],
    ("server", "used_ports"): ["20000-20100", "9000"], ("api", "jwt_secret"): "s" * 40,
    ("logging", "log_level"): "debug", ("database", "db_type"): "sqlite",
    ("database", "db_host"): "db.example:3306",
    ("api", "operator_key"): "k" * 40, ("api", "tenant_domain"): "rport.example.com",
}
COMPANIONS: dict[tuple[str, str], dict[tuple[str, str], Any]] = {
    ("server", "auth_table"): DB,
    ("api", "auth_user_table"): {("api", "auth_group_table"): "groups", **DB},
    ("api", "auth_group_table"): {("api", "auth_user_table"): "users", **DB},
    ("server", "equate_clientauthid_clientid"): {("server", "auth_multiuse_creds"): False},
    ("server", "multi_tenancy"): TABLES,
    ("api", "tenant_domain"): {("server", "multi_tenancy"): True, **TABLES},
    ("api", "doc_root"): {("api", "address"): "127.0.0.1:9998"},
    ("api", "cert_file"): {("api", "key_file"): "/k.pem"},
    ("api", "key_file"): {("api", "cert_file"): "/c.pem"},
    ("database", "db_type"): {("database", "db_name"): "/tmp/rportd-flags.db"},
}


def sample(setting: Setting) -> Any:
    where = (setting.section, setting.key)
    if where in SAMPLES:
        return SAMPLES[where]
    if setting.kind == "bool":
        return not setting.default
    if setting.kind == "int":
        return setting.default + 7
    return {"duration": "7s", "list": ["1000-1001"]}.get(setting.kind, f"/sample/{setting.key}")


def as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return ",".join(value) if isinstance(value, list) else str(value)


def as_argv(values: dict[tuple[str, str], Any]) -> list[str]:
    argv = []
    for where, value in values.items():
        flag = f"--{flag_name(BY_KEY[where])}"
        if isinstance(value, bool):
            argv.append(flag if value else f"{flag}=false")
        elif isinstance(value, list):
            argv += [word for item in value for word in (flag, item)] or [flag, ""]
        else:
            argv += [flag, as_text(value)]
    return argv


def flags_of(argv: list[str]) -> dict[tuple[str, str], Any]:
    return setting_flags(parser().parse_args(expand_bool_flags(argv, bool_flag_names())))


def document(values: dict[tuple[str, str], Any]) -> dict[str, dict[str, Any]]:
    doc: dict[str, dict[str, Any]] = {}
    for (section, key), value in values.items():
        doc.setdefault(section, {})[key] = value
    return doc


def build(file: dict[tuple[str, str], Any], env: dict[str, str] | None = None,
          argv: list[str] | None = None) -> Config:
    # embedded=True only lifts the root rule (the tests may run as root): it is tested below
    return build_config(document(file), env or {}, embedded=True, flags=flags_of(argv or []))


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: f"--{flag_name(s)}")
def test_every_flag_and_env_var_reaches_its_setting_as_the_file_key_does(setting: Setting) -> None:
    where, value = (setting.section, setting.key), sample(setting)
    companions = COMPANIONS.get(where, {})
    try:
        from_file = build({**companions, where: value})
    except ConfigError as exc:
        pytest.fail(f"give SAMPLES (and COMPANIONS) a valid value for [{setting.section}] "
                    f"{setting.key}: {exc}")
    from_flag = build(companions, argv=as_argv({where: value}))
    from_env = build(companions, env={env_name(setting): as_text(value)})
    assert value != setting.default, f"give SAMPLES a value for {setting.key} that is not its default"
    assert from_flag == from_file and from_env == from_file


def test_precedence_is_flag_then_environment_then_file_then_default() -> None:
    file = {("server", "keep_lost_clients"): "2h", ("server", "check_port_timeout"): "3s",
            ("server", "max_request_bytes"): 4000}
    env = {"RPORTD_SERVER_KEEP_LOST_CLIENTS": "3h", "RPORTD_SERVER_CHECK_PORT_TIMEOUT": "4s"}
    config = build(file, env, ["--keep-lost-clients", "4h"])
    assert config.server.keep_lost_clients == 4 * 3600  # flag over env over file
    assert config.server.check_port_timeout == 4  # env over file
    assert config.server.max_request_bytes == 4000  # file over default
    assert config.server.tunnel_write_timeout == 30  # default


def test_rports_short_forms_and_repeated_lists() -> None:
    flags = flags_of(["-a", "127.0.0.1:7000", "-e", "22,80", "-e", "443", "-l", "/tmp/r.log",
                      "--use-ports", "20000-20010", "--use-ports", "21000"])
    assert flags == {("server", "address"): "127.0.0.1:7000",
                     ("server", "excluded_ports"): ["22", "80", "443"],
                     ("logging", "log_file"): "/tmp/r.log",
                     ("server", "used_ports"): ["20000-20010", "21000"]}
    assert flags_of(["-e", ""]) == {("server", "excluded_ports"): []}  # rport: -e "" = none


def test_boolean_flags_bare_or_with_a_value_and_never_take_the_next_word() -> None:
    assert flags_of(["--allow-root", "--auth-write=false"]) == {
        ("server", "allow_root"): "true", ("server", "auth_write"): "false"}
    args = parser().parse_args(expand_bool_flags(["--allow-root", "migrate"], bool_flag_names()))
    assert args.command == "migrate"
    with pytest.raises(ConfigError, match="--auth-write: 'maybe' is not true or false"):
        build({}, argv=["--auth-write=maybe"])


def test_older_rport_names_are_aliases() -> None:
    assert ("equate-authusername-clientid", "") in ALIASES
    assert flags_of(["--equate-authusername-clientid", "-v", "debug"]) == {
        ("server", "equate_clientauthid_clientid"): "true", ("logging", "log_level"): "debug"}


def test_openrports_client_request_limit_flag_sets_the_agent_request_limit() -> None:
    assert flags_of(["--max-request-bytes-client", "524288"]) == {
        ("server", "max_request_bytes_client"): "524288"}


def test_flag_names_are_unique_and_rports() -> None:
    names = [flag_name(s) for s in SETTINGS]
    assert len(names) == len(set(names))
    assert RPORT_FLAGS <= set(names), RPORT_FLAGS - set(names)
    shorts = {s.short: flag_name(s) for s in SETTINGS if s.short}
    assert shorts == {"a": "addr", "e": "exclude-ports", "l": "log-file"}


def test_ignored_rport_flags_are_accepted_and_named() -> None:
    args = parser().parse_args(["--save-clients-interval", "1s", "--proxy", "http://x:1"])
    assert ignored_flags(args) == ["--save-clients-interval", "--proxy"]


def test_help_lists_every_flag_with_default_and_environment_variable(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "400")
    text = " ".join(parser().format_help().split())
    for setting in SETTINGS:
        assert f"--{flag_name(setting)}" in text
        assert f"Default: {default_text(setting)}. Env: {env_name(setting)}." in text
    assert "its flag, its environment variable (RPORTD_<SECTION>_<KEY>), the config file (-c), " \
           "its default" in text
    for name in ignored_names():
        assert f"--{name}" in text


def test_help_from_the_real_process(tmp_path: Path) -> None:
    result = run_rportd(["--help"], cwd=tmp_path)
    assert result.returncode == 0 and "--api-auth-user-table" in result.stdout
    assert "RPORTD_DATABASE_DB_PASSWORD" in result.stdout


# ---------------------------------------------------------------- rules, as flags


def _changed(changes: dict[str, dict[str, object]]) -> list[str]:
    return [f"--{flag_name(BY_KEY[(section, key)])}" for section, body in changes.items()
            for key, value in body.items() if value is not None]


def _flags_from_sections(sections: dict[str, dict[str, object]]) -> list[str]:
    return as_argv({(section, key): value for section, body in sections.items()
                    for key, value in body.items()})


@pytest.mark.parametrize("rule", sorted(RULES))
def test_every_refuse_to_start_rule_holds_for_flags_and_names_the_flag(
        tmp_path: Path, rule: str) -> None:
    changes, needles = RULES[rule]
    if changes.get("database", {}).get("db_type") == "sqlite":
        changes = {**changes, "database": {"db_type": "sqlite",
                                           "db_name": str(tmp_path / "auth.db")}}
    argv = _flags_from_sections(merged(tmp_path, changes))
    with pytest.raises(ConfigError) as caught:
        build_config({}, {}, flags=flags_of(argv))
    line = str(caught.value)
    for needle in needles:
        assert needle in line
    assert any(flag in line for flag in _changed(changes)), line


@pytest.mark.parametrize("argv, needles", [
    (["--auth", "a:b", "--authfile", "/x.json"], ("--auth", "--authfile", "only one")),
    (["--keep-lost-clients", "169h"], ("--keep-lost-clients", "168h")),
    (["--max-request-bytes", "lots"], ("--max-request-bytes", "whole number")),
    (["--auth-table", "clients_auth"], ("--auth-table", "db_type")),
])
def test_a_flag_breaking_a_rule_exits_1_with_one_line_naming_it(
        tmp_path: Path, argv: list[str], needles: tuple[str, ...]) -> None:
    base = ["--addr", f"127.0.0.1:{free_port()}", "--data-dir", str(tmp_path / "data"),
            "--allow-root"]
    assert_refused(run_rportd([*base, *argv], cwd=tmp_path), *needles)


def test_root_without_allow_root_names_the_flag(tmp_path: Path) -> None:
    import os

    if os.geteuid() != 0:
        pytest.skip("the root rule needs root")
    argv = ["--addr", f"127.0.0.1:{free_port()}", "--auth", "a:b", "--data-dir", str(tmp_path)]
    assert_refused(run_rportd(argv, cwd=tmp_path), "[server] allow_root", "--allow-root")


# ---------------------------------------------------------------- README


def test_readme_flag_table_matches_the_settings_table() -> None:
    readme = (ROOT / "README.md").read_text()
    table = flag_table()
    assert table in readme, ("README's flag table is stale; regenerate it with "
                             "python -m rportd.flags and paste it under 'Flags'")
    assert re.search(r"rportd --addr 127\.0\.0\.1:8080 --api-addr 127\.0\.0\.1:3000 --api-auth "
                     r"admin:foobaz --auth clientAuth1:1234 --data-dir /var/lib/rport", readme)


def test_a_flag_over_a_file_and_a_variable_is_the_one_named(tmp_path: Path) -> None:
    from .helpers import write_config
    from .test_config import base

    config = write_config(tmp_path / "rportd.conf", {
        **base(tmp_path), "server": {**base(tmp_path)["server"], "check_port_timeout": "3s"}})
    result = run_rportd(["-c", str(config), "--check-port-timeout", "61s"], cwd=tmp_path,
                        env={"RPORTD_SERVER_CHECK_PORT_TIMEOUT": "4s"})
    assert_refused(result, "[server] check_port_timeout (set by --check-port-timeout)", "1m")


@pytest.mark.parametrize("argv, line", [
    (["--addr"], "rportd: error: argument --addr/-a: expected one argument (see --help)"),
    (["--no-such-flag"], "rportd: error: unrecognized arguments: --no-such-flag (see --help)"),
])
def test_a_command_line_mistake_is_one_line_and_exit_1(tmp_path: Path, argv: list[str],
                                                      line: str) -> None:
    result = run_rportd(argv, cwd=tmp_path)
    assert result.returncode == 1 and result.stderr.strip() == line


# rport's server flags, as their sources declare them (rport 0.1.x's pFlags, openrport 0.9's
# lFlags), less -c/--config, --service and --service-user (handled apart).
RPORT_01_FLAGS = {
    "addr", "url", "key", "authfile", "auth", "proxy", "api-addr", "api-authfile", "api-auth",
    "api-jwt-secret", "api-doc-root", "log-file", "verbose", "exclude-ports", "data-dir",
    "csr-file-name", "keep-lost-clients", "save-clients-interval", "cleanup-clients-interval",
    "max-request-bytes", "check-port-timeout", "auth-write", "auth-multiuse-creds",
    "equate-authusername-clientid", "save-clients-auth-interval"}
OPENRPORT_09_FLAGS = {
    "addr", "url", "key", "authfile", "auth", "auth-table", "proxy", "api-addr", "api-authfile",
    "api-auth", "api-auth-user-table", "api-auth-group-table", "api-jwt-secret", "api-doc-root",
    "api-cert-file", "api-key-file", "api-access-log-file", "db-type", "db-name", "db-host",
    "db-user", "db-password", "log-file", "log-level", "use-ports", "exclude-ports", "data-dir",
    "save-clients-interval", "max-request-bytes", "max-filepush-bytes",
    "max-request-bytes-client", "check-port-timeout", "auth-write", "auth-multiuse-creds",
    "equate-clientauthid-clientid", "run-remote-cmd-timeout-sec", "allow-root",
    "monitoring-data-storage-days", "tunnel-proxy-cert-file", "tunnel-proxy-key-file",
    "novnc-root", "guacd-address"}


def test_rports_flags_are_settings_aliases_or_ignored_and_only_rports_are_called_so() -> None:
    rports = RPORT_01_FLAGS | OPENRPORT_09_FLAGS
    generated = {flag_name(s) for s in SETTINGS}
    aliases = {name for name, _ in ALIASES}
    assert rports - generated - aliases - set(ignored_names()) == set()
    assert set(ignored_names()) <= rports, "a flag rport never had is listed as rport's"
    assert generated & rports <= RPORT_FLAGS, "an rport flag is marked rportd's own"
    assert RPORT_FLAGS <= rports, "a flag rport never had is marked rport's"
