"""`rport`: our agent's command line, flags and config keys as the rport client's."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tomllib
from typing import Any

from ..config import parse_duration
from ..errors import ConfigError, RportdError
from ..tunnel_spec import parse_remote_spec
from .commands import policy_from
from .connection import WIRE_PATTERNS, AgentSettings, run_agent
from .websocket import parse_server

__all__ = ["main", "settings_from"]

_KNOWN = {
    "client": {"server", "auth", "id", "name", "tags", "remotes", "fingerprint"},
    "connection": {"keep_alive", "max_retry_count", "max_retry_interval"},
    "logging": {"log_file", "log_level"},
    "remote-commands": {"enabled", "allow", "deny", "order", "send_back_limit"},
    "remote-scripts": {"enabled"},
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rport", description="rport agent (rport-v1).")
    parser.add_argument("server", nargs="?", help="rportd address, host:port or http://host:port")
    parser.add_argument("remotes", nargs="*", help="tunnels: [[lhost:]lport:]rhost:rport")
    parser.add_argument("-c", "--config", help="rport.conf (TOML, the rport client's keys)")
    parser.add_argument("--auth", help="client auth id and password, ID:PASSWORD")
    parser.add_argument("--id", dest="client_id", help="client id (default: chosen by the server)")
    parser.add_argument("--name", help="client name")
    parser.add_argument("-t", "--tag", action="append", dest="tags", help="tag (repeatable)")
    parser.add_argument("--fingerprint", help="accept only a server whose fingerprint starts so")
    parser.add_argument("--keepalive", help="ping interval, e.g. 30s (0 = off)")
    parser.add_argument("--max-retry-count", type=int, help="give up after N attempts (-1 never)")
    parser.add_argument("--max-retry-interval", help="longest delay between attempts (5m)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at info level")
    # benchmarks only: flow control as the Go client sends it (rportd.client.connection)
    parser.add_argument("--wire-pattern", choices=WIRE_PATTERNS, default="asyncssh",
                        help=argparse.SUPPRESS)
    return parser


def _read_config(path: str) -> dict[str, dict[str, Any]]:
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


def settings_from(args: argparse.Namespace) -> tuple[AgentSettings, dict[str, Any]]:
    doc = _read_config(args.config) if args.config else {}
    client, connection, logs = (doc.get(s, {}) for s in ("client", "connection", "logging"))
    server = args.server or client.get("server")
    auth = args.auth or client.get("auth")
    if not server:
        raise ConfigError("server", "give the rportd address (SERVER argument or [client] server)")
    if not auth or ":" not in auth:
        raise ConfigError("--auth", "give the credential as ID:PASSWORD")
    auth_id, _, password = auth.partition(":")
    remotes = [parse_remote_spec(r).to_json() for r in (args.remotes or client.get("remotes", []))]
    keepalive = args.keepalive or connection.get("keep_alive", "30s")
    interval = parse_duration(args.max_retry_interval or connection.get("max_retry_interval", "5m"),
                              "max_retry_interval")
    settings = AgentSettings(
        server=parse_server(server), auth_id=auth_id, password=password,
        client_id=args.client_id or client.get("id", ""), name=args.name or client.get("name", ""),
        tags=args.tags or list(client.get("tags", [])), remotes=remotes,
        fingerprint=args.fingerprint or client.get("fingerprint", ""),
        keepalive=parse_duration(keepalive, "keepalive"),
        max_retry_count=(args.max_retry_count if args.max_retry_count is not None
                         else int(connection.get("max_retry_count", -1))),
        max_retry_interval=interval if interval >= 1 else 300.0,
        wire_pattern=getattr(args, "wire_pattern", "asyncssh"),
        commands=policy_from(doc.get("remote-commands", {}), doc.get("remote-scripts", {})))
    return settings, logs


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings, logs = settings_from(args)
    except (RportdError, ValueError) as exc:
        print(f"rport: {exc}", file=sys.stderr)
        return 1
    level = logging.INFO if args.verbose else getattr(
        logging, str(logs.get("log_level", "info")).upper(), logging.INFO)
    logging.basicConfig(level=level, filename=logs.get("log_file") or None,
                        format="%(asctime)s client: %(message)s")
    logging.getLogger("asyncssh").setLevel(logging.WARNING)
    try:
        return asyncio.run(run_agent(settings))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
