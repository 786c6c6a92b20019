"""Configuration: TOML, environment and flag parsing over the settings table, and every
refuse-to-start rule.

Each setting is declared once in `SETTINGS` (settings.py); parsing, defaults, the environment
overrides, the example config and its documentation test all come from that table. Errors raise
`ConfigError` naming the setting and what to change; `rportd.cli` prints it on one line and exits
1 before any port is opened.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .settings import SETTINGS, Setting  # re-exported: the table is declared in settings.py

__all__ = [
    "SETTINGS",
    "Setting",
    "Config",
    "ServerConfig",
    "ApiConfig",
    "LoggingConfig",
    "DatabaseConfig",
    "PortRange",
    "load_config",
    "build_config",
    "parse_duration",
    "parse_port_ranges",
    "validate_identifier",
    "example_config",
    "flag_name",
    "env_name",
]

_BY_KEY = {(s.section, s.key): s for s in SETTINGS}
# rport's flags: [server] keys bare, [api] keys with "api-"; [database] keys already start "db_"
_FLAG_PREFIX = {"server": "", "logging": "", "database": ""}
_SERVER_DURATIONS = tuple(s.key for s in SETTINGS if s.section == "server" and s.kind == "duration")
_LOG_LEVELS = ("error", "warning", "info", "debug")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True)
class PortRange:
    first: int
    last: int

    def __contains__(self, port: object) -> bool:
        return isinstance(port, int) and self.first <= port <= self.last


@dataclass(frozen=True)
class ServerConfig:
    address: str
    url: str
    key_seed: str
    auth: str
    auth_file: str
    auth_table: str
    auth_multiuse_creds: bool
    equate_clientauthid_clientid: bool
    auth_write: bool
    max_failed_login: int
    ban_time: int
    excluded_ports: tuple[PortRange, ...]
    used_ports: tuple[PortRange, ...]
    data_dir: Path
    keep_lost_clients: float
    tunnel_write_timeout: float
    max_request_bytes: int
    max_request_bytes_client: int
    check_port_timeout: float
    max_concurrent_handshakes: int
    max_handshakes_waiting: int
    upgrade_timeout: float
    handshake_timeout: float
    login_timeout: float
    max_unauthenticated: int
    max_unauthenticated_per_address: int
    run_remote_cmd_timeout_sec: int
    cmd_result_grace: float
    jobs_max_results: int
    max_job_output_bytes: int
    allow_root: bool
    multi_tenancy: bool


@dataclass(frozen=True)
class ApiConfig:
    address: str
    auth: str
    auth_file: str
    auth_user_table: str
    auth_group_table: str
    jwt_secret: str
    doc_root: str
    cert_file: str
    key_file: str
    access_log_file: str
    max_request_bytes: int
    rate_while_tunnels_busy: int
    read_timeout: float = 10.0
    listing_cache_bytes: int = 16 << 20
    operator_key: str = field(default="", repr=False)
    tenant_domain: str = ""


@dataclass(frozen=True)
class LoggingConfig:
    log_file: str
    log_level: str


@dataclass(frozen=True)
class DatabaseConfig:
    db_type: str
    db_host: str
    db_user: str
    db_password: str = field(repr=False)
    db_name: str
    db_timeout: float = 5.0

    @property
    def configured(self) -> bool:
        return bool(self.db_type)


@dataclass(frozen=True)
class Config:
    server: ServerConfig
    api: ApiConfig
    logging: LoggingConfig
    database: DatabaseConfig
    warnings: tuple[str, ...] = ()
    embedded: bool = False

    @property
    def own_database(self) -> DatabaseConfig:
        """Where rportd keeps its own tables: the configured database, else SQLite in data_dir."""
        if self.database.configured:
            return self.database
        return DatabaseConfig("sqlite", "", "", "", str(self.server.data_dir / "rportd.db"),
                              self.database.db_timeout)


# ---------------------------------------------------------------- value parsing


def parse_duration(text: str, setting: str) -> float:
    """Parse a Go-style duration ("1h", "90m", "1h30m", "500ms", "0") into seconds."""
    value = text.strip()
    if value == "0":
        return 0.0
    pos, total = 0, 0.0
    for match in _DURATION_PART.finditer(value):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if pos == 0 or pos != len(value):
        raise ConfigError(setting, f"{text!r} is not a duration; write it like \"5s\", \"90m\" or \"1h\"")
    return total


def parse_port_ranges(items: list[str], setting: str) -> tuple[PortRange, ...]:
    """Parse ["1-1024", "8080"] into port ranges, refusing anything outside 1..65535."""
    ranges = []
    for item in items:
        text = str(item).strip()
        first_text, _, last_text = text.partition("-")
        try:
            first = int(first_text)
            last = int(last_text) if last_text else first
        except ValueError:
            raise ConfigError(setting, f"{text!r} is not a port or a range like \"1-1024\"") from None
        if not 1 <= first <= last <= 65535:
            raise ConfigError(setting, f"{text!r} must be ports 1..65535, low-high")
        ranges.append(PortRange(first, last))
    return tuple(ranges)


def validate_identifier(name: str, setting: str) -> str:
    """Table names are interpolated into SQL, so only plain identifiers are allowed."""
    if not _IDENTIFIER.match(name):
        raise ConfigError(setting, f"{name!r} is not a plain SQL identifier (letters, digits, _)")
    return name


def _coerce(setting: Setting, value: Any, name: str) -> Any:
    kind = setting.kind
    if setting.secret and not isinstance(value, str):
        raise ConfigError(name, "must be a string (the value is a secret: not shown)")
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(name, f"{value!r} is not true or false")
    if kind == "int":
        return _coerce_int(value, name)
    if kind == "list":
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list):
            return [str(part) for part in value]
        raise ConfigError(name, f"{value!r} is not a list like ['1-1024']")
    if not isinstance(value, str):
        raise ConfigError(name, f"{value!r} must be a string")
    return value


def _coerce_int(value: Any, name: str) -> int:
    """Whole numbers only: 2048.9 is refused, never truncated (2048.0 is 2048)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value.strip()):
        return int(value)
    raise ConfigError(name, f"{value!r} is not a whole number; write it without a fraction")


def flag_name(setting: Setting) -> str:
    """The command-line name without dashes: rport's (`addr`) where the table names one, else the
    key with dashes, after "api-" (or "<section>-") outside [server], [logging] and [database]."""
    if setting.flag:
        return setting.flag
    prefix = _FLAG_PREFIX.get(setting.section, f"{setting.section}-")
    return prefix + setting.key.replace("_", "-")


def env_name(setting: Setting) -> str:
    return f"RPORTD_{setting.section.upper()}_{setting.key.upper()}".replace("-", "_")


def _raw_values(
    document: Mapping[str, Any], environ: Mapping[str, str], flags: Mapping[tuple[str, str], Any]
) -> tuple[dict[tuple[str, str], Any], list[str]]:
    """Merge defaults, the TOML document, RPORTD_<SECTION>_<KEY> variables and command-line flags,
    each over the one before; collect warnings."""
    values: dict[tuple[str, str], Any] = {k: s.default for k, s in _BY_KEY.items()}
    warnings: list[str] = []
    for section, body in document.items():
        if not isinstance(body, Mapping):
            warnings.append(f"unknown top-level key {section!r} ignored")
            continue
        for key, value in body.items():
            if (section, key) not in _BY_KEY:
                warnings.append(f"unknown setting [{section}] {key} ignored")
                continue
            values[(section, key)] = _coerce(_BY_KEY[(section, key)], value, f"[{section}] {key}")
    for (section, key), setting in _BY_KEY.items():
        env = env_name(setting)
        if env in environ:
            values[(section, key)] = _coerce(setting, environ[env], env)
    for where, value in flags.items():
        values[where] = _coerce(_BY_KEY[where], value, f"--{flag_name(_BY_KEY[where])}")
    return values, warnings


# ---------------------------------------------------------------- building and rules


def _check_credential_pair(text: str, setting: str) -> None:
    if text and (":" not in text or not text.split(":", 1)[0] or not text.split(":", 1)[1]):
        raise ConfigError(setting, "must be \"id:password\" with neither part empty")


def _check_duration_bounds(server: ServerConfig) -> None:
    keep = server.keep_lost_clients
    if keep != 0 and not 1 <= keep <= 168 * 3600:
        raise ConfigError("[server] keep_lost_clients", "must be 0 or between 1s and 168h")
    if not 1 <= server.tunnel_write_timeout <= 3600:
        raise ConfigError("[server] tunnel_write_timeout", "must be between 1s and 1h")
    if server.check_port_timeout > 60:
        raise ConfigError("[server] check_port_timeout", "must be at most 1m")
    if server.check_port_timeout <= 0:
        raise ConfigError("[server] check_port_timeout", "must be more than 0s")
    _check_job_limits(server)


def _check_job_limits(server: ServerConfig) -> None:
    bounds = {"run_remote_cmd_timeout_sec": (1, 86400), "cmd_result_grace": (0, 3600),
              "jobs_max_results": (1, 1_000_000), "max_job_output_bytes": (0, 16 << 20)}
    for key, (low, high) in bounds.items():
        if not low <= getattr(server, key) <= high:
            raise ConfigError(f"[server] {key}", f"must be between {low} and {high}")


def _check_sources(server: ServerConfig, api: ApiConfig, db: DatabaseConfig) -> None:
    client_sources = [k for k in ("auth", "auth_file", "auth_table") if getattr(server, k)]
    if len(client_sources) > 1:
        raise ConfigError("[server] " + ", ".join(client_sources),
                          "set only one client auth source")
    if api.auth_file and api.auth:
        raise ConfigError("[api] auth, auth_file", "set only one API user auth source")
    if (api.auth or api.auth_file) and (api.auth_user_table or api.auth_group_table):
        which = "auth" if api.auth else "auth_file"
        raise ConfigError(f"[api] {which}, auth_user_table",
                          "set only one API user auth source")
    if api.auth_user_table and not api.auth_group_table:
        raise ConfigError("[api] auth_group_table", "is required when [api] auth_user_table is set")
    if api.auth_group_table and not api.auth_user_table:
        raise ConfigError("[api] auth_user_table", "is required when [api] auth_group_table is set")
    tables = [("[server] auth_table", server.auth_table),
              ("[api] auth_user_table", api.auth_user_table),
              ("[api] auth_group_table", api.auth_group_table)]
    for setting, table in tables:
        if table:
            validate_identifier(table, setting)
            if not db.configured:
                raise ConfigError("[database] db_type",
                                  f"{setting} needs a [database] section with db_type")
    _check_credential_pair(server.auth, "[server] auth")
    _check_credential_pair(api.auth, "[api] auth")


def _check_database(db: DatabaseConfig) -> None:
    if not db.configured:
        return
    if db.db_type not in ("mysql", "sqlite"):
        raise ConfigError("[database] db_type", f"{db.db_type!r} is not \"mysql\" or \"sqlite\"")
    if not db.db_name:
        raise ConfigError("[database] db_name", "is required (database name, or SQLite file)")
    if db.db_type == "mysql" and db.db_host and not db.db_host.startswith("socket:"):
        host, _, port = db.db_host.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError("[database] db_host", "must be host:port or socket:/path")


def _check_tenancy(server: ServerConfig, api: ApiConfig, db: DatabaseConfig) -> None:
    if not server.multi_tenancy:
        return
    missing = [name for name, value in (("[server] auth_table", server.auth_table),
                                        ("[api] auth_user_table", api.auth_user_table),
                                        ("[api] auth_group_table", api.auth_group_table))
               if not value]
    if missing:
        raise ConfigError(", ".join(missing),
                          "[server] multi_tenancy = true needs auth_table, auth_user_table and "
                          "auth_group_table (each with a tenant column); set them or turn "
                          "multi_tenancy off")
    if not db.configured:
        raise ConfigError("[database] db_type", "multi_tenancy = true needs a [database]")


def _check_misc(server: ServerConfig, api: ApiConfig, log: LoggingConfig) -> None:
    if bool(api.cert_file) != bool(api.key_file):
        missing, given = ("key_file", "cert_file") if api.cert_file else ("cert_file", "key_file")
        raise ConfigError(f"[api] {missing}", f"[api] {given} is set: cert_file and key_file "
                                              "must be set together")
    if api.doc_root and not api.address:
        raise ConfigError("[api] doc_root", "needs [api] address to be set")
    if log.log_level not in _LOG_LEVELS:
        raise ConfigError("[logging] log_level",
                          f"{log.log_level!r} is not one of {', '.join(_LOG_LEVELS)}")
    if server.max_request_bytes < 128:
        raise ConfigError("[server] max_request_bytes", "must be at least 128")
    if not 1024 <= server.max_request_bytes_client <= 16 << 20:
        raise ConfigError("[server] max_request_bytes_client", "must be 1024..16777216 bytes")
    if api.rate_while_tunnels_busy < 0:
        raise ConfigError("[api] rate_while_tunnels_busy", "must be 0 (no limit) or more")
    _check_agent_port_limits(server)
    _check_address(server.address, "[server] address")
    if api.address:
        _check_address(api.address, "[api] address")


def _check_agent_port_limits(server: ServerConfig) -> None:
    for key in ("max_concurrent_handshakes", "max_handshakes_waiting", "max_unauthenticated",
                "max_unauthenticated_per_address"):
        if getattr(server, key) < 1:
            raise ConfigError(f"[server] {key}", "must be at least 1")
    for key in ("upgrade_timeout", "handshake_timeout", "login_timeout"):
        if not 0 < getattr(server, key) <= 600:
            raise ConfigError(f"[server] {key}", "must be more than 0s and at most 10m")


def _check_limits(server: ServerConfig, api: ApiConfig, db: DatabaseConfig) -> None:
    """Values that parse but cannot work: refused rather than silently ignored."""
    if api.max_request_bytes < 1:
        raise ConfigError("[api] max_request_bytes", "must be at least 1 (bytes of a request body)")
    if not 1 <= api.read_timeout <= 300:
        raise ConfigError("[api] read_timeout", "must be between 1s and 5m")
    if api.listing_cache_bytes < 0:
        raise ConfigError("[api] listing_cache_bytes", "must be 0 (no cache) or more")
    if not 1 <= db.db_timeout <= 60:
        raise ConfigError("[database] db_timeout", "must be between 1s and 1m")
    if server.used_ports and all(_covered(r, server.excluded_ports) for r in server.used_ports):
        raise ConfigError("[server] used_ports", "lies entirely inside excluded_ports, so no "
                                                 "random tunnel port is left; change either")
    if server.equate_clientauthid_clientid and server.auth_multiuse_creds:
        raise ConfigError("[server] equate_clientauthid_clientid",
                          "needs auth_multiuse_creds = false (one client per credential)")


def _covered(ports: PortRange, excluded: tuple[PortRange, ...]) -> bool:
    return all(any(port in r for r in excluded) for port in range(ports.first, ports.last + 1))


def _check_address(address: str, setting: str) -> None:
    host, _, port = address.rpartition(":")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(setting, f"{address!r} must be host:port")


MIN_SECRET_BYTES = 32


def _check_secrets(server: ServerConfig, api: ApiConfig) -> None:
    """A short JWT secret can be brute-forced offline from one token, and a guessing limit of 0
    would switch the protection off: both refuse to start."""
    if api.jwt_secret and len(api.jwt_secret.encode("utf-8")) < MIN_SECRET_BYTES:
        raise ConfigError("[api] jwt_secret",
                          f"must be at least {MIN_SECRET_BYTES} bytes (e.g. `openssl rand -hex "
                          "32`), or unset to have one generated in data_dir")
    if api.operator_key and len(api.operator_key) < MIN_SECRET_BYTES:
        raise ConfigError("[api] operator_key",
                          f"must be at least {MIN_SECRET_BYTES} characters (e.g. `openssl rand "
                          "-hex 32`), or unset for no operator API")
    if server.max_failed_login < 1:
        raise ConfigError("[server] max_failed_login", "must be at least 1")
    if server.ban_time < 1:
        raise ConfigError("[server] ban_time", "must be at least 1 (seconds)")


_DOMAIN = re.compile(r"^(?=.{1,200}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)"
                     r"(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$")


def _check_tenant_domain(server: ServerConfig, api: ApiConfig) -> None:
    if not api.tenant_domain:
        return
    if not _DOMAIN.fullmatch(api.tenant_domain):
        raise ConfigError("[api] tenant_domain",
                          f"{api.tenant_domain!r} is not a lower-case DNS name like "
                          "\"rport.example.com\" (no port, no scheme, no trailing dot)")
    if not server.multi_tenancy:
        raise ConfigError("[api] tenant_domain", "needs [server] multi_tenancy = true")


def _check_root(server: ServerConfig, embedded: bool) -> None:
    if embedded or server.allow_root:
        return
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        raise ConfigError("[server] allow_root",
                          "refusing to run as root; run as an unprivileged user or set "
                          "allow_root = true (--allow-root)")


def build_config(
    document: Mapping[str, Any],
    environ: Mapping[str, str] | None = None,
    *,
    embedded: bool = False,
    flags: Mapping[tuple[str, str], Any] | None = None,
) -> Config:
    """Turn a parsed TOML document, environment overrides and command-line flags (keyed by
    (section, key), rportd.flags) into a checked, frozen Config."""
    env = os.environ if environ is None else environ
    try:
        return _build(document, env, embedded, flags or {})
    except ConfigError as exc:
        raise _name_sources(exc, env, flags or {}) from None


_NAMED = re.compile(r"\[([\w-]+)\] (\w+(?:, \w+)*)")


def _given(document: Mapping[str, Any], environ: Mapping[str, str],
           flags: Mapping[tuple[str, str], Any], section: str, key: str) -> bool:
    body = document.get(section)
    return ((isinstance(body, Mapping) and key in body) or (section, key) in flags
            or f"RPORTD_{section.upper()}_{key.upper()}" in environ)


def _name_sources(exc: ConfigError, environ: Mapping[str, str],
                  flags: Mapping[tuple[str, str], Any]) -> ConfigError:
    """When a setting the error names came from a flag or RPORTD_<SECTION>_<KEY>, say which: the
    file may look fine, and a command-line user knows the flag, not the key."""
    sources: list[str] = []
    for match in _NAMED.finditer(f"{exc.setting} {exc.message}"):
        for key in match.group(2).split(", "):
            setting = _BY_KEY.get((match.group(1), key))
            source = (None if setting is None else f"--{flag_name(setting)}"
                      if (setting.section, key) in flags else env_name(setting)
                      if env_name(setting) in environ else None)
            if source and source not in sources:
                sources.append(source)
    if not sources:
        return exc
    return ConfigError(f"{exc.setting} (set by {', '.join(sources)})", exc.message)


def _build(document: Mapping[str, Any], environ: Mapping[str, str], embedded: bool,
           flags: Mapping[tuple[str, str], Any]) -> Config:
    values, warnings = _raw_values(document, environ, flags)

    def section(name: str) -> dict[str, Any]:
        return {k: v for (s, k), v in values.items() if s == name}

    raw_server = section("server")
    raw_server["excluded_ports"] = parse_port_ranges(raw_server["excluded_ports"],
                                                     "[server] excluded_ports")
    raw_server["used_ports"] = parse_port_ranges(raw_server["used_ports"], "[server] used_ports")
    raw_server["data_dir"] = Path(raw_server["data_dir"])
    for key in _SERVER_DURATIONS:
        raw_server[key] = parse_duration(raw_server[key], f"[server] {key}")
    server = ServerConfig(**raw_server)
    raw_api, raw_db = section("api"), section("database")
    raw_api["read_timeout"] = parse_duration(raw_api["read_timeout"], "[api] read_timeout")
    raw_db["db_timeout"] = parse_duration(raw_db["db_timeout"], "[database] db_timeout")
    if _given(document, environ, flags, "server", "max_request_bytes") and not _given(
            document, environ, flags, "api", "max_request_bytes"):
        raw_api["max_request_bytes"] = raw_server["max_request_bytes"]  # rport's key for it
    api = ApiConfig(**raw_api)
    log = LoggingConfig(**section("logging"))
    db = DatabaseConfig(**raw_db)
    _check_duration_bounds(server)
    _check_database(db)
    _check_sources(server, api, db)
    _check_tenancy(server, api, db)
    _check_misc(server, api, log)
    _check_limits(server, api, db)
    _check_root(server, embedded)
    _check_secrets(server, api)
    _check_tenant_domain(server, api)
    return Config(server, api, log, db, tuple(warnings), embedded)


def load_config(path: str | Path, environ: Mapping[str, str] | None = None,
                flags: Mapping[tuple[str, str], Any] | None = None) -> Config:
    """Read and check a TOML config file (with environment and flag overrides)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("-c", f"cannot read config file {str(path)!r}: {exc.strerror}") from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("-c", f"{str(path)!r} is not valid TOML: {exc}") from None
    return build_config(document, environ, flags=flags)


def _toml_literal(setting: Setting) -> str:
    value = setting.default
    if setting.kind == "bool":
        return "true" if value else "false"
    if setting.kind == "int":
        return str(value)
    if setting.kind == "list":
        return "[" + ", ".join(f"'{v}'" for v in value) + "]"
    return f'"{value}"'


def example_config() -> str:
    """rportd.example.conf: every setting, commented out, with its default and help."""
    lines = ["# rportd configuration. Every key with its default; uncomment to change.",
             "# Each key can also be set by the environment (RPORTD_<SECTION>_<KEY>) and by a flag",
             "# (named above each key); a flag wins over the environment, which wins over this file.",
             ""]
    section = ""
    for setting in SETTINGS:
        if setting.section != section:
            section = setting.section
            lines += ["", f"[{section}]"]
        lines.append(f"  ## {setting.help}")
        lines.append(f"  ## --{flag_name(setting)}, {env_name(setting)}")
        lines.append(f"  #{setting.key} = {_toml_literal(setting)}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(example_config(), end="")
