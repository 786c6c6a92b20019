"""`rport`: our agent's command line, flags and config keys as the rport client's."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import tomllib
from pathlib import Path
from typing import Any

from .. import __version__
from ..config import parse_duration
from ..errors import ConfigError, RportdError
from ..flags import OneLineParser, expand_bool_flags
from ..service import (
    AGENT_ADDRESS_FAMILIES,
    COMMANDS,
    Unit,
    executable,
    hidden_paths,
    run_service,
    writable_dirs,
)
from ..tunnel_spec import parse_remote_spec
from .commands import policy_from
from .connection import WIRE_PATTERNS, AgentSettings, run_agent
from .options import add_options, bool_option_names, overlay, parse_headers
from .websocket import parse_proxy, parse_server

__all__ = ["main", "settings_from", "agent_document", "ROOT_REFUSAL"]

# The rport client's words when it refuses to run as root without --allow-root.
ROOT_REFUSAL = "By default running as root is not allowed."
SERVICE_UNIT_DIR_ENV = "RPORT_SERVICE_UNIT_DIR"
_LOG_LEVELS = {"error": logging.ERROR, "info": logging.INFO, "debug": logging.DEBUG}

_KNOWN = {
    "client": {"server", "auth", "id", "name", "tags", "labels", "remotes", "fingerprint", "proxy",
               "allow_root"},
    "connection": {"keep_alive", "max_retry_count", "max_retry_interval", "headers", "hostname"},
    "logging": {"log_file", "log_level"},
    "remote-commands": {"enabled", "allow", "deny", "order", "send_back_limit"},
    "remote-scripts": {"enabled"},
}


def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="rport", description="rport agent (rport-v1).",
                           usage="rport [FLAG ...] [SERVER [REMOTE ...]]", allow_abbrev=False,
                           epilog="Boolean flags: --flag means true, --flag=false.")
    parser.add_argument("server", nargs="?", help="rportd address, host:port or http://host:port")
    parser.add_argument("remotes", nargs="*", help="tunnels: [[lhost:]lport:]rhost:rport")
    parser.add_argument("-c", "--config", metavar="FILE",
                        help="rport.conf (TOML, the rport client's keys)")
    parser.add_argument("--version", action="version", version=f"rport {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="same as --log-level info")
    service = parser.add_argument_group("service", "Manage the agent as a systemd service, as "
                                        "rport's --service does; only -c and --service-* are used.")
    service.add_argument("--service", choices=COMMANDS, help="install, uninstall, start or stop")
    service.add_argument("--service-user", default="rport", metavar="USER",
                         help="user the service runs as (install). Default: rport")
    service.add_argument("--service-unit-dir", metavar="DIR",
                         default=os.environ.get(SERVICE_UNIT_DIR_ENV),
                         help="write the unit here instead of /etc/systemd/system, and run no "
                              f"systemctl (packaging, tests). Env: {SERVICE_UNIT_DIR_ENV}")
    add_options(parser)
    # benchmarks only: flow control as the Go client sends it (rportd.client.connection)
    parser.add_argument("--wire-pattern", choices=WIRE_PATTERNS, default="asyncssh",
                        help=argparse.SUPPRESS)
    return parser


def _read_config(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            document = tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError("-c", f"cannot read {path!r}: {exc}") from None
    for section, body in document.items():
        for key in body if isinstance(body, dict) else {}:
            if key not in _KNOWN.get(section, set()):
                print(f"rport: warning: unknown setting [{section}] {key} ignored", file=sys.stderr)
    return document


def agent_document(args: argparse.Namespace) -> dict[str, Any]:
    """The config file's document with the environment and the flags over it (flag > env >
    file); every setting, `[remote-commands]` included, is read from here."""
    return overlay(_read_config(args.config) if args.config else {}, args)


def _section(doc: dict[str, Any], name: str) -> dict[str, Any]:
    body = doc.get(name, {})
    return body if isinstance(body, dict) else {}


def _as_list(value: Any) -> list[str]:
    """A TOML array, or one string where an array was meant."""
    return [str(value)] if isinstance(value, str) else [str(item) for item in value]


def settings_from(args: argparse.Namespace) -> tuple[AgentSettings, dict[str, Any]]:
    doc = agent_document(args)
    client, connection, logs = (_section(doc, s) for s in ("client", "connection", "logging"))
    server = args.server or client.get("server")
    auth = client.get("auth")
    if not server:
        raise ConfigError("server", "give the rportd address (SERVER argument or [client] server)")
    if not auth or ":" not in auth:
        raise ConfigError("--auth", "give the credential as ID:PASSWORD")
    auth_id, _, password = auth.partition(":")
    remotes = [parse_remote_spec(r).to_json() for r in (args.remotes or client.get("remotes", []))]
    interval = parse_duration(str(connection.get("max_retry_interval", "5m")),
                              "max_retry_interval")
    settings = AgentSettings(
        server=parse_server(server), auth_id=auth_id, password=password,
        client_id=client.get("id", ""), name=client.get("name", ""),
        tags=_as_list(client.get("tags", [])), remotes=remotes,
        labels={str(k): str(v) for k, v in dict(client.get("labels", {})).items()},
        fingerprint=client.get("fingerprint", ""),
        keepalive=parse_duration(str(connection.get("keep_alive", "3m")), "keepalive"),
        max_retry_count=int(connection.get("max_retry_count", -1)),
        max_retry_interval=interval if interval >= 1 else 300.0,
        wire_pattern=getattr(args, "wire_pattern", "asyncssh"),
        proxy=parse_proxy(client["proxy"]) if client.get("proxy") else None,
        headers=parse_headers(_as_list(connection.get("headers", [])),
                              str(connection.get("hostname", ""))),
        allow_root=bool(client.get("allow_root", False)),
        commands=policy_from(doc.get("remote-commands", {}), doc.get("remote-scripts", {})))
    return settings, logs


def _setup_logging(args: argparse.Namespace, logs: dict[str, Any]) -> None:
    text = "info" if args.verbose else str(logs.get("log_level", "info")).lower()
    if text not in _LOG_LEVELS:
        raise ConfigError("--log-level", f"{text!r} is not one of error, info, debug")
    logging.basicConfig(level=_LOG_LEVELS[text], filename=logs.get("log_file") or None,
                        format="%(asctime)s client: %(message)s")
    logging.getLogger("asyncssh").setLevel(logging.WARNING)


def _service(args: argparse.Namespace) -> int:
    """rport validates the file before installing; so does our agent."""
    if not args.config:
        raise ConfigError("--service", "needs -c FILE: the unit runs the agent with that config")
    path = str(Path(args.config).resolve())
    # refuse a config the agent cannot run on, as the client does before installing
    _, logs = settings_from(_parser().parse_args(["-c", path]))
    log_file = str(logs.get("log_file", ""))
    unit = Unit(name="rport", description="rport agent (rport-v1) of rportd",
                exec_start=(*executable("rport", "rportd.client.cli"), "-c", path),
                user=args.service_user,
                writable=writable_dirs([str(Path(log_file).parent)] if log_file else []),
                address_families=AGENT_ADDRESS_FAMILIES, proc_subset_pid=False)
    hidden = hidden_paths([path, *unit.writable])
    if hidden:
        print(f"rport: warning: {', '.join(hidden)}: hidden from the service by ProtectHome / "
              "PrivateTmp; move them (e.g. /etc/rport)", file=sys.stderr)
    print(run_service(args.service, unit, Path(args.service_unit_dir)
                      if args.service_unit_dir else None))
    return 0


def _run(args: argparse.Namespace) -> int:
    if args.service:
        return _service(args)
    settings, logs = settings_from(args)
    if not settings.allow_root and hasattr(os, "geteuid") and os.geteuid() == 0:
        print(f"rport: {ROOT_REFUSAL}", file=sys.stderr)
        return 1
    _setup_logging(args, logs)
    return asyncio.run(run_agent(settings))


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    args = _parser().parse_intermixed_args(expand_bool_flags(words, bool_option_names()))
    try:
        return _run(args)
    except (RportdError, ValueError) as exc:
        print(f"rport: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
