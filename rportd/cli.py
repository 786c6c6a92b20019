"""Command line: `rportd [-c FILE] [rport's flags]` runs the server, `rportd migrate` the schema,
`rportd --service CMD` manages the systemd unit.

Every rport server flag is accepted at the top level with no subcommand (`rportd --addr ...`), as
rport's; subcommands (`migrate`, and further ones) take the same setting flags after their name.
Exit status 1 with one line on stderr for every configuration, database or service problem.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import Any

from . import __version__
from .config import Config, build_config, load_config
from .errors import ConfigError, StoreError
from .flags import (
    PRECEDENCE,
    OneLineParser,
    add_setting_flags,
    bool_flag_names,
    expand_bool_flags,
    ignored_flags,
    ignored_names,
    setting_flags,
)
from .preflight import check_writable_file, split_address
from .service import (
    COMMANDS,
    ServiceError,
    Unit,
    executable,
    hidden_paths,
    run_service,
    writable_dirs,
)
from .store import open_store
from .store.migrate import migrate_down, migrate_up, status
from .transfer.command import add_tenant_command, run_tenant_command

__all__ = ["main"]

_EMBEDDED_DATA_DIR = "./rportd-data"
# With no -c and no flag but these, rportd runs its embedded default (bootstrap.py).
_EMBEDDED_FLAGS = {("server", "data_dir"), ("logging", "log_level"), ("logging", "log_file")}
SERVICE_UNIT_DIR_ENV = "RPORTD_SERVICE_UNIT_DIR"

_EPILOG = (f"{PRECEDENCE} With no -c and no flag other than --data-dir, --log-level and "
           f"--log-file, rportd runs its embedded default (SQLite in {_EMBEDDED_DATA_DIR}, "
           "first-run credentials). Boolean flags: --flag means true, --flag=false. "
           "rport flags rportd does not need, accepted with a warning: "
           + ", ".join(f"--{name}" for name in ignored_names()) + ".")


def _parser() -> argparse.ArgumentParser:
    root = OneLineParser(prog="rportd", description="Multi-tenant rport server.",
                         usage="rportd [-c FILE] [FLAG ...] [COMMAND ...]", epilog=_EPILOG,
                         allow_abbrev=False)
    root.add_argument("--version", action="version", version=f"rportd {__version__}")
    root.add_argument("-c", "--config", metavar="FILE", help="TOML config file (rport's keys)")
    _add_service_flags(root)
    add_setting_flags(root)
    sub = root.add_subparsers(dest="command", metavar="COMMAND")
    _add_migrate(sub)
    add_tenant_command(sub)  # rportd tenant import|export (rportd/transfer/command.py)
    return root


def _add_service_flags(root: argparse.ArgumentParser) -> None:
    group = root.add_argument_group("service", "Manage rportd as a systemd service, as rport's "
                                    "--service does; only -c and --service-* are used with it.")
    group.add_argument("--service", choices=COMMANDS, help="install, uninstall, start or stop")
    group.add_argument("--service-user", default="rport", metavar="USER",
                       help="user the service runs as (install). Default: rport")
    group.add_argument("--service-unit-dir", default=os.environ.get(SERVICE_UNIT_DIR_ENV),
                       metavar="DIR",
                       help="write the unit here instead of /etc/systemd/system, and run no "
                            f"systemctl (packaging, tests). Env: {SERVICE_UNIT_DIR_ENV}")


def _add_migrate(sub: Any) -> None:
    migrate = sub.add_parser("migrate", help="apply the SQL migrations to [database]",
                             usage="rportd migrate [-c FILE] [--status | --down N] [FLAG ...]",
                             epilog=PRECEDENCE, allow_abbrev=False)
    migrate.add_argument("-c", "--config", dest="config", default=argparse.SUPPRESS, metavar="FILE",
                         help="TOML config file (rport's keys)")
    migrate.add_argument("--status", action="store_true", help="list applied and pending")
    migrate.add_argument("--down", type=int, metavar="N", help="revert the newest N migrations")
    add_setting_flags(migrate)


def _setup_logging(config: Config) -> None:
    level = getattr(logging, config.logging.log_level.upper())
    handler: logging.Handler = logging.StreamHandler()
    if config.logging.log_file:
        check_writable_file(config.logging.log_file, "[logging] log_file")
        handler = logging.FileHandler(config.logging.log_file, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)
    # asyncssh logs every packet exchange at info; keep it quiet unless debugging.
    logging.getLogger("asyncssh").setLevel(logging.WARNING if level > logging.DEBUG else level)


def _load(args: argparse.Namespace) -> Config:
    flags = setting_flags(args)
    if set(flags) <= _EMBEDDED_FLAGS and not args.config:
        from .bootstrap import embedded_config

        data_dir = Path(flags.pop(("server", "data_dir"), _EMBEDDED_DATA_DIR)).resolve()
        return embedded_config(data_dir, flags=flags)
    if args.command == "migrate":  # the root rule is about serving; migrating runs no server
        flags[("server", "allow_root")] = True
    if args.config:
        return load_config(args.config, flags=flags)
    return build_config({}, flags=flags)


async def _migrate(config: Config, args: argparse.Namespace) -> int:
    store = await open_store(config.own_database)
    try:
        if args.status:
            for migration, applied in await status(store):
                state = "applied" if applied else "pending"
                print(f"{migration.version:04d}_{migration.name}\t{state}")
        elif args.down:
            for migration in await migrate_down(store, args.down):
                print(f"reverted {migration.version:04d}_{migration.name}")
        else:
            done = await migrate_up(store)
            for migration in done:
                print(f"applied {migration.version:04d}_{migration.name}")
            if not done:
                print("schema is up to date")
    finally:
        await store.close()
    return 0


def _service_unit(args: argparse.Namespace) -> Unit:
    """rport validates the file (without other flags) before installing; so does rportd. The
    root rule is the service user's, not the installer's."""
    if not args.config:
        raise ServiceError("--service needs -c FILE: the unit runs rportd with that config")
    path = str(Path(args.config).resolve())
    as_root = args.service_user == "root"
    config = load_config(path, environ={}, flags={} if as_root else {("server", "allow_root"): True})
    ports = [split_address(config.server.address)[1]]
    if config.api.address:
        ports.append(split_address(config.api.address)[1])
    logs = [config.logging.log_file, config.api.access_log_file]
    database = config.own_database  # SQLite writes its file, journal and WAL beside it
    sqlite_dir = [str(Path(database.db_name).parent)] if database.db_type == "sqlite" else []
    return Unit(name="rportd", description="rportd, a multi-tenant rport server",
                exec_start=(*executable("rportd", "rportd.cli"), "-c", path),
                user=args.service_user,
                writable=writable_dirs([str(config.server.data_dir), *sqlite_dir,
                                        *(str(Path(log).parent) for log in logs if log)]),
                low_ports=any(0 < port < 1024 for port in ports))


def _service(args: argparse.Namespace) -> int:
    if setting_flags(args) or ignored_flags(args):
        print("rportd: warning: only -c and --service-* are used with --service; other flags "
              "are ignored", file=sys.stderr)
    unit_dir = Path(args.service_unit_dir) if args.service_unit_dir else None
    unit = _service_unit(args)
    _warn_hidden(unit)
    print(run_service(args.service, unit, unit_dir))
    return 0


def _warn_hidden(unit: Unit) -> None:
    hidden = hidden_paths([unit.exec_start[-1], *unit.writable])
    if hidden:
        print(f"rportd: warning: {', '.join(hidden)}: hidden from the service by ProtectHome / "
              "PrivateTmp; move them (e.g. /etc/rportd, /var/lib/rportd)", file=sys.stderr)


def _warn(args: argparse.Namespace, config: Config) -> None:
    for warning in config.warnings:
        print(f"rportd: warning: {warning}", file=sys.stderr)
    ignored = ignored_flags(args)
    if ignored:
        print(f"rportd: warning: {', '.join(ignored)}: rport flags rportd does not need, "
              "ignored", file=sys.stderr)


def _run(args: argparse.Namespace) -> int:
    if args.service:
        return _service(args)
    if args.command == "tenant":
        args.setting_flags = setting_flags(args)
        return run_tenant_command(args)
    config = _load(args)
    _warn(args, config)
    if args.command == "migrate":
        return asyncio.run(_migrate(config, args))
    _setup_logging(config)
    from .server import serve

    asyncio.run(serve(config))
    return 0


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(expand_bool_flags(words, bool_flag_names()))
    try:
        return _run(args)
    except ConfigError as exc:
        print(f"rportd: config error: {exc}", file=sys.stderr)
    except StoreError as exc:
        print(f"rportd: database error: {exc}", file=sys.stderr)
    except ServiceError as exc:
        print(f"rportd: service: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        return 0
    return 1


if __name__ == "__main__":
    sys.exit(main())
