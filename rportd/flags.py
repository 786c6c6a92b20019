"""rportd's command-line flags, generated from the settings table: rport's names and short forms,
each with its default and environment variable in --help, plus rport's flags rportd does not need.

Precedence is flag > environment > file > default (`rportd.config.build_config(flags=...)`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence
from typing import Any, NoReturn

from .config import SETTINGS, Setting, env_name, flag_name

__all__ = ["OneLineParser", "IGNORED", "ALIASES", "PRECEDENCE", "RPORT_FLAGS", "add_setting_flags",
           "setting_flags", "ignored_flags", "expand_bool_flags", "bool_flag_names",
           "default_text", "flag_table", "ignored_names"]

PRECEDENCE = ("Each setting comes from, in this order: its flag, its environment variable "
              "(RPORTD_<SECTION>_<KEY>), the config file (-c), its default.")

# rport's server flags (rport 0.1.x, openrport 0.9) that are settings of rportd too.
RPORT_FLAGS = frozenset({
    "addr", "url", "key", "auth", "authfile", "auth-table", "auth-write", "auth-multiuse-creds",
    "equate-clientauthid-clientid", "exclude-ports", "use-ports", "data-dir", "keep-lost-clients",
    "check-port-timeout", "max-request-bytes", "max-request-bytes-client", "api-addr", "api-auth",
    "api-authfile",
    "api-auth-user-table", "api-auth-group-table", "api-jwt-secret", "api-doc-root",
    "api-cert-file", "api-key-file", "api-access-log-file", "db-type", "db-host", "db-user",
    "db-password", "db-name", "log-level", "log-file", "allow-root", "run-remote-cmd-timeout-sec"})

# rport's server flags (0.1.x and openrport 0.9) that rportd does not need: accepted, warned about.
IGNORED: dict[str, str] = {
    "proxy": "rportd serves no HTTP proxy on the agent port",
    "save-clients-interval": "clients are persisted at once",
    "cleanup-clients-interval": "lost clients are removed after keep_lost_clients",
    "save-clients-auth-interval": "credentials are written at once",
    "csr-file-name": "clients are kept in rportd's database",
    "max-filepush-bytes": "no file push in rportd",
    "monitoring-data-storage-days": "no monitoring in rportd",
    "tunnel-proxy-cert-file": "no tunnel proxy in rportd",
    "tunnel-proxy-key-file": "no tunnel proxy in rportd",
    "novnc-root": "no noVNC in rportd",
    "guacd-address": "no Guacamole in rportd",
}

# Other rport names of rportd's settings: (flag, short) -> (section, key). A generated flag
# always wins over an alias or an ignored name.
ALIASES: dict[tuple[str, str], tuple[str, str]] = {
    ("equate-authusername-clientid", ""): ("server", "equate_clientauthid_clientid"),
    ("verbose", "v"): ("logging", "log_level"),
}

class OneLineParser(argparse.ArgumentParser):
    """A command-line mistake is one line and exit status 1, as rport's (not argparse's 2)."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message} (see --help)", file=sys.stderr)
        sys.exit(1)


_METAVAR = {"str": "TEXT", "int": "N", "duration": "DURATION", "list": "A,B", "bool": "BOOL"}


class _AppendList(argparse.Action):
    """rport's StringSlice: comma-separated, repeatable, the first use replaces the default."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        items = list(getattr(namespace, self.dest, []))
        items += [part.strip() for part in str(values).split(",") if part.strip()]
        setattr(namespace, self.dest, items)


def ignored_names() -> list[str]:
    """rport's unneeded flags, less any that a setting of the table has since taken."""
    generated = {flag_name(s) for s in SETTINGS}
    return [name for name in IGNORED if name not in generated]


def _aliases() -> dict[tuple[str, str], Setting]:
    """The aliases no setting's own flag has taken, with the setting each sets."""
    generated = {flag_name(s) for s in SETTINGS}
    by_key = {(s.section, s.key): s for s in SETTINGS}
    return {name: by_key[where] for name, where in ALIASES.items()
            if name[0] not in generated and where in by_key}


def _dest(section: str, key: str) -> str:
    return f"setting:{section}:{key}"


def default_text(setting: Setting) -> str:
    value = setting.default
    if setting.kind == "bool":
        return "true" if value else "false"
    if setting.kind == "list":
        return ",".join(value) or '""'
    return str(value) if value != "" else '""'


def _help(setting: Setting) -> str:
    text = (f"{setting.help} Default: {default_text(setting)}. Env: {env_name(setting)}. "
            f"File: [{setting.section}] {setting.key}.")
    return text.replace("%", "%%")


def _add(group: Any, names: list[str], setting: Setting, help_text: str) -> None:
    options: dict[str, Any] = {"dest": _dest(setting.section, setting.key),
                               "default": argparse.SUPPRESS, "help": help_text,
                               "metavar": _METAVAR.get(setting.kind, "TEXT")}
    if setting.kind == "bool":
        options.update(nargs="?", const="true")
    elif setting.kind == "list":
        options["action"] = _AppendList
    group.add_argument(*names, **options)


def add_setting_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per setting of the table, its aliases, and rport's ignored flags (hidden)."""
    group = parser.add_argument_group("settings", PRECEDENCE)
    for setting in SETTINGS:
        names = [f"--{flag_name(setting)}"] + ([f"-{setting.short}"] if setting.short else [])
        _add(group, names, setting, _help(setting))
    for (alias, short), setting in _aliases().items():
        names = [f"--{alias}"] + ([f"-{short}"] if short else [])
        _add(group, names, setting, argparse.SUPPRESS)
    for name in ignored_names():
        group.add_argument(f"--{name}", dest=f"ignored:{name}", default=argparse.SUPPRESS,
                           help=argparse.SUPPRESS)


def setting_flags(args: argparse.Namespace) -> dict[tuple[str, str], Any]:
    """The settings given on the command line, keyed (section, key) for build_config."""
    given = vars(args)
    return {(s.section, s.key): given[_dest(s.section, s.key)] for s in SETTINGS
            if _dest(s.section, s.key) in given}


def ignored_flags(args: argparse.Namespace) -> list[str]:
    return [f"--{name.partition(':')[2]}" for name in vars(args) if name.startswith("ignored:")]


def bool_flag_names() -> set[str]:
    names = {f"--{flag_name(s)}" for s in SETTINGS if s.kind == "bool"}
    return names | {f"--{alias}" for (alias, _), s in _aliases().items() if s.kind == "bool"}


def expand_bool_flags(argv: Sequence[str], names: Iterable[str]) -> list[str]:
    """A bare boolean flag means true, and never takes the next word as its value (as rport's
    `--allow-root SERVER`); `--flag=false` turns it off."""
    bools, out = set(names), list[str]()
    for position, arg in enumerate(argv):
        if arg == "--":
            return out + list(argv[position:])
        out.append(f"{arg}=true" if arg in bools else arg)
    return out


def flag_table() -> str:
    """README's table: every flag, its setting, environment variable and default; then rport's
    flags rportd ignores."""
    rows = ["| flag | setting | environment | default | rport |", "| --- | --- | --- | --- | --- |"]
    for setting in SETTINGS:
        name = flag_name(setting)
        short = f", `-{setting.short}`" if setting.short else ""
        origin = "rport" if name in RPORT_FLAGS else "rportd"
        rows.append(f"| `--{name}`{short} | `[{setting.section}] {setting.key}` | "
                    f"`{env_name(setting)}` | `{default_text(setting)}` | {origin} |")
    for name in ignored_names():
        rows.append(f"| `--{name}` | ignored, with a warning: {IGNORED[name]} | | | rport |")
    for (alias, short), setting in _aliases().items():
        also = f", `-{short}`" if short else ""
        rows.append(f"| `--{alias}`{also} | other name of `[{setting.section}] {setting.key}` "
                    "| | | rport |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(flag_table(), end="")
