"""The settings table: every setting rportd has, declared once (section, key, kind, default,
help, rport's flag name). Parsing, defaults, flags, environment variables, the example config and
the docs all come from it (config.py, flags.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["SETTINGS", "Setting"]


@dataclass(frozen=True)
class Setting:
    section: str
    key: str
    kind: str  # str | bool | int | list | duration
    default: Any
    help: str
    flag: str = ""  # rport's flag name where it is not the generated one (flag_name)
    short: str = ""  # rport's one-letter form (-a, -e, -l)
    secret: bool = False  # a password or key: an error names the setting, never the value


SETTINGS: tuple[Setting, ...] = (
    Setting("server", "address", "str", "0.0.0.0:8080", "Where agents connect (host:port).",
            flag="addr", short="a"),
    Setting("server", "url", "str", "", "Public URL agents use; defaults to http://<address>."),
    Setting("server", "key_seed", "str", "",
            "Seed for a deterministic ECDSA host key (same key as rport for the same seed). "
            "Empty: a key is generated once and kept in data_dir.", flag="key", secret=True),
    Setting("server", "auth", "str", "", "A single client credential, \"clientAuthId:password\".",
            secret=True),
    Setting("server", "auth_file", "str", "", "JSON file mapping client auth ids to passwords.",
            flag="authfile"),
    Setting("server", "auth_table", "str", "",
            "Database table of client credentials (id, password[, tenant])."),
    Setting("server", "auth_multiuse_creds", "bool", True,
            "Whether one credential may be used by several clients."),
    Setting("server", "equate_clientauthid_clientid", "bool", False,
            "Use the client auth id as the client id (needs auth_multiuse_creds = false)."),
    Setting("server", "auth_write", "bool", True,
            "Whether client credentials may be changed through the API."),
    Setting("server", "max_failed_login", "int", 5,
            "Failed logins from one source address (agent port) or one (user, address) pair "
            "(API) within 15 minutes before it is banned for ban_time; as openrport."),
    Setting("server", "ban_time", "int", 3600,
            "Seconds a source address (agent port) or a (user, address) pair (API) stays banned "
            "after max_failed_login failures."),
    Setting("server", "excluded_ports", "list", ["1-1024"],
            "Ports never given to tunnels (single ports or ranges).", flag="exclude-ports",
            short="e"),
    Setting("server", "used_ports", "list", ["20000-30000"],
            "Ports from which random tunnel ports are taken.", flag="use-ports"),
    Setting("server", "data_dir", "str", "/var/lib/rportd",
            "Directory for the host key and the embedded SQLite database."),
    Setting("server", "keep_lost_clients", "duration", "1h",
            "How long a disconnected client is kept (0 or 1s..168h)."),
    Setting("server", "tunnel_write_timeout", "duration", "30s",
            "A tunnel user that reads nothing for this long while data waits is cut off "
            "(1s..1h)."),
    Setting("server", "max_request_bytes", "int", 10240, "API request bodies when [api] "
            "max_request_bytes is unset (openrport's meaning); agents: max_request_bytes_client."),
    Setting("server", "max_request_bytes_client", "int", 512 * 1024, "Largest request an "
            "agent may send, as openrport (1 KiB..16 MiB; a connection may hold twice this)."),
    Setting("server", "check_port_timeout", "duration", "2s",
            "How long an agent may take to check a tunnel's remote port (at most 1m)."),
    Setting("server", "max_concurrent_handshakes", "int", 32,
            "SSH key exchanges run at once; more wait, so a reconnect storm cannot starve the API."),
    Setting("server", "max_handshakes_waiting", "int", 512,
            "Connections that may wait for a key-exchange slot; more are hung up on (the agent "
            "retries). A wait lasts at most upgrade_timeout."),
    Setting("server", "upgrade_timeout", "duration", "10s",
            "Deadline for a new agent connection's WebSocket upgrade and SSH version line, and "
            "for its wait for a key-exchange slot."),
    Setting("server", "handshake_timeout", "duration", "10s",
            "Deadline for the SSH key exchange once it has a slot."),
    Setting("server", "login_timeout", "duration", "20s",
            "Deadline from the upgrade until the agent has logged in."),
    Setting("server", "max_unauthenticated", "int", 2048,
            "Agent connections not yet logged in, in all; more are refused at once."),
    Setting("server", "max_unauthenticated_per_address", "int", 256,
            "Agent connections not yet logged in from one IPv4 address or IPv6 /64."),
    Setting("server", "run_remote_cmd_timeout_sec", "int", 60,
            "Timeout of a command or script whose request names none (seconds, 1..86400)."),
    Setting("server", "cmd_result_grace", "duration", "10s",
            "How long after its timeout a job may still report before it is marked unknown."),
    Setting("server", "jobs_max_results", "int", 200,
            "Command results kept per client (and multi-client commands per tenant); older "
            "ones are deleted. openrport counts 10000 over all clients."),
    Setting("server", "max_job_output_bytes", "int", 65536,
            "Bytes of a job's stdout, and of its stderr, that rportd stores; the rest is cut."),
    Setting("server", "allow_root", "bool", False, "Allow running as root."),
    Setting("server", "multi_tenancy", "bool", False,
            "Isolate clients and users by the tenant column of the auth tables."),
    Setting("api", "address", "str", "", "Where the REST API listens (host:port); empty: no API.",
            flag="api-addr"),
    Setting("api", "auth", "str", "", "A single API user, \"user:password\".", secret=True),
    Setting("api", "auth_file", "str", "", "JSON file of API users (username, bcrypt password, groups).",
            flag="api-authfile"),
    Setting("api", "auth_user_table", "str", "", "Database table of API users."),
    Setting("api", "auth_group_table", "str", "", "Database table of API user groups."),
    Setting("api", "jwt_secret", "str", "", "Secret for API tokens; empty: generated, kept in data_dir.",
            secret=True),
    Setting("api", "doc_root", "str", "", "Directory of static files served by the API."),
    Setting("api", "cert_file", "str", "", "TLS certificate for the API (with key_file)."),
    Setting("api", "key_file", "str", "", "TLS key for the API (with cert_file)."),
    Setting("api", "access_log_file", "str", "", "API access log, Combined Log Format."),
    Setting("api", "max_request_bytes", "int", 10240, "Largest API request body."),
    Setting("api", "rate_while_tunnels_busy", "int", 300,
            "API requests per second admitted while tunnels stream (more wait; 0 = no limit). "
            "Lower keeps more tunnel throughput, higher keeps API latency lower. Shared fairly "
            "between callers: each user, and all unauthenticated requests together, get a turn."),
    Setting("api", "read_timeout", "duration", "10s",
            "How long a client may take to send a request's headers, or its body; an idle "
            "keep-alive connection is closed after it too (1s..5m)."),
    Setting("api", "listing_cache_bytes", "int", 16 << 20,
            "Memory for cached GET /clients answers, in bytes (0 = no cache)."),
    Setting("api", "operator_key", "str", "",
            "The operator's API key (at least 32 characters), sent as `Authorization: Bearer "
            "<key>`: manages tenants (/api/v1/tenants) and reads /metrics, and reaches no "
            "tenant's clients, jobs or credentials. Empty: no operator API.", secret=True),
    Setting("api", "tenant_domain", "str", "",
            "With multi_tenancy: bind each request to the tenant named by its subdomain "
            "(j.<tenant_domain> is tenant j), on the API and the agent port; the bare domain "
            "serves only the operator API, health and OpenAPI. Empty: off."),
    Setting("logging", "log_file", "str", "", "Log file; empty: stderr.", short="l"),
    Setting("logging", "log_level", "str", "error", "One of error, warning, info, debug."),
    Setting("database", "db_type", "str", "", "mysql or sqlite."),
    Setting("database", "db_host", "str", "", "MySQL server as host:port or socket:/path."),
    Setting("database", "db_user", "str", "", "MySQL user."),
    Setting("database", "db_password", "str", "", "MySQL password.", secret=True),
    Setting("database", "db_name", "str", "", "MySQL database name, or the SQLite file."),
    Setting("database", "db_timeout", "duration", "5s",
            "How long one database call (connecting included) may take; then the API answers "
            "503 ERR_CODE_DATABASE_UNAVAILABLE (1s..1m)."),
)
