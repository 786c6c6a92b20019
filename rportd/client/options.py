"""The agent's flags, as the rport client's: each reaches its config key (`[client] auth`, ...),
over the environment and the file, as the client's viper bindings do."""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from .commands import DEFAULT_SEND_BACK_LIMIT

__all__ = ["Option", "OPTIONS", "add_options", "overlay", "bool_option_names", "parse_headers",
           "HEADER_NAME"]

HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


@dataclass(frozen=True)
class Option:
    flag: str
    section: str
    key: str
    kind: str  # str | int | bool | duration | array (repeatable, as the client's StringArray)
    default: Any
    help: str
    short: str = ""
    env: str = ""  # openrport's client reads RPORT_AUTH and RPORT_FINGERPRINT


# Defaults are openrport 0.9.14's (the client maintained today); rport 0.1's differ where noted.
OPTIONS: tuple[Option, ...] = (
    Option("auth", "client", "auth", "str", "",
           "Client credential, CLIENT_AUTH_ID:PASSWORD.", env="RPORT_AUTH"),
    Option("fingerprint", "client", "fingerprint", "str", "",
           "Accept only a server whose host key fingerprint starts with this.",
           env="RPORT_FINGERPRINT"),
    Option("id", "client", "id", "str", "", "Client id; empty: chosen by the server."),
    Option("name", "client", "name", "str", "", "Client name."),
    Option("tag", "client", "tags", "array", [], "A tag; repeat for more.", short="t"),
    Option("proxy", "client", "proxy", "str", "",
           "HTTP CONNECT proxy to reach rportd through, http://[user:password@]host:port."),
    Option("allow-root", "client", "allow_root", "bool", False, "Allow running as root."),
    Option("keepalive", "connection", "keep_alive", "duration", "3m",
           "Ping interval; a ping unanswered that long means reconnect; 0 = off (rport 0.1: 0)."),
    Option("max-retry-count", "connection", "max_retry_count", "int", -1,
           "Give up after this many failed attempts; -1: never."),
    Option("max-retry-interval", "connection", "max_retry_interval", "duration", "5m",
           "Longest wait between attempts (backoff from 100ms, doubling)."),
    Option("header", "connection", "headers", "array", [],
           "Extra header of the upgrade request, \"Name: value\"; repeat for more."),
    Option("hostname", "connection", "hostname", "str", "",
           "Host header of the upgrade request (default: the server's host:port)."),
    Option("log-file", "logging", "log_file", "str", "", "Log file; empty: stderr.", short="l"),
    Option("log-level", "logging", "log_level", "str", "info",
           "error, info or debug (rport 0.1: error)."),
    Option("remote-commands-enabled", "remote-commands", "enabled", "bool", True,
           "Whether the server may run commands on this machine."),
    Option("remote-commands-send-back-limit", "remote-commands", "send_back_limit", "int",
           DEFAULT_SEND_BACK_LIMIT, "Most bytes of a command's stdout, and of its stderr, sent "
           "back (rport 0.1's default; openrport 0.9's 4 MiB would not fit the server's agent "
           "request limit)."),
)

_METAVAR = {"str": "TEXT", "int": "N", "bool": "BOOL", "duration": "DURATION", "array": "TEXT"}


def _dest(option: Option) -> str:
    return f"option:{option.section}:{option.key}"


def _default_text(option: Option) -> str:
    if option.kind == "bool":
        return "true" if option.default else "false"
    return '""' if option.default in ("", []) else str(option.default)


def add_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "options", "Each setting comes from, in this order: its flag, its environment variable "
                   "(where it has one), the config file (-c), its default.")
    for option in OPTIONS:
        names = [f"--{option.flag}"] + ([f"-{option.short}"] if option.short else [])
        where = f"File: [{option.section}] {option.key}."
        env = f" Env: {option.env}." if option.env else ""
        kwargs: dict[str, Any] = {
            "dest": _dest(option), "default": argparse.SUPPRESS,
            "metavar": _METAVAR[option.kind],
            "help": f"{option.help} Default: {_default_text(option)}.{env} {where}".replace("%", "%%"),
        }
        if option.kind == "bool":
            kwargs.update(nargs="?", const="true")
        elif option.kind == "array":
            kwargs["action"] = "append"
        group.add_argument(*names, **kwargs)


def bool_option_names() -> set[str]:
    return {f"--{option.flag}" for option in OPTIONS if option.kind == "bool"}


def _typed(option: Option, value: Any, source: str) -> Any:
    """Flag and environment text as the file's TOML types, so the rest reads one document."""
    if option.kind == "bool":
        text = str(value).lower()
        if text not in ("true", "1", "t", "yes", "false", "0", "f", "no"):
            raise ConfigError(source, f"{value!r} is not true or false")
        return text in ("true", "1", "t", "yes")
    if option.kind == "int":
        if not re.fullmatch(r"[+-]?\d+", str(value).strip()):
            raise ConfigError(source, f"{value!r} is not a whole number")
        return int(value)
    return value


_FILE_TYPES: dict[str, tuple[type, ...]] = {"str": (str,), "duration": (str,), "bool": (bool,),
                                             "int": (int,), "array": (list, str)}
_TYPE_WORDS = {"str": "a string", "duration": 'a duration string like "30s"',
               "bool": "true or false", "int": "a whole number", "array": "a list of strings"}


def _check_file_value(option: Option, value: Any) -> None:
    """The file's TOML types, checked once here so nothing later trips over them; the value is
    not repeated (`auth` holds the password)."""
    array_items = not isinstance(value, list) or all(isinstance(item, str) for item in value)
    wrong_bool = option.kind == "int" and isinstance(value, bool)
    if not isinstance(value, _FILE_TYPES[option.kind]) or wrong_bool or not array_items:
        raise ConfigError(f"[{option.section}] {option.key}",
                          f"must be {_TYPE_WORDS[option.kind]}, not a {type(value).__name__}")


def overlay(document: dict[str, Any], args: argparse.Namespace,
            environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The file's document with the environment, then the flags, written over it."""
    env = os.environ if environ is None else environ
    given = vars(args)
    merged = {section: dict(body) if isinstance(body, dict) else body
              for section, body in document.items()}
    for option in OPTIONS:
        body = document.get(option.section)
        if isinstance(body, dict) and option.key in body:
            _check_file_value(option, body[option.key])
        value, source = None, ""
        if option.env and env.get(option.env):
            value, source = env[option.env], option.env
        if _dest(option) in given:
            value, source = given[_dest(option)], f"--{option.flag}"
        if source:
            if not isinstance(merged.get(option.section), dict):
                merged[option.section] = {}
            merged[option.section][option.key] = _typed(option, value, source)
    return merged


# The upgrade's own headers: gorilla/websocket refuses to take them from the caller.
_RESERVED = {"Upgrade", "Connection", "Sec-Websocket-Key", "Sec-Websocket-Version",
             "Sec-Websocket-Extensions", "Sec-Websocket-Protocol"}


def _canonical(name: str) -> str:
    """Go's textproto.CanonicalMIMEHeaderKey: `x-forwarded-for` -> `X-Forwarded-For`."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


def parse_headers(raw: list[str], hostname: str) -> dict[str, str]:
    """`--header "Name: value"` (repeatable; a later one of the same name wins, as the client's
    http.Header.Set) and `--hostname` as the Host header."""
    headers: dict[str, str] = {}
    for text in raw:
        name, colon, value = str(text).partition(":")
        if not colon:
            raise ConfigError("--header", f"invalid header {text!r}. Should be in the format "
                                          "\"HeaderName: HeaderContent\"")
        if not HEADER_NAME.match(name):
            raise ConfigError("--header", f"{name!r} is not a header name")
        if any(c in value for c in "\r\n\0"):
            raise ConfigError("--header", f"the value of {name!r} holds a line break or NUL")
        canonical = _canonical(name)
        if canonical in _RESERVED:
            raise ConfigError("--header", f"websocket: duplicate header not allowed: {canonical}")
        headers[canonical] = value.strip()
    if hostname:
        if any(c in hostname for c in "\r\n\0 "):
            raise ConfigError("--hostname", f"{hostname!r} is not a host name")
        headers["Host"] = hostname
    return headers
