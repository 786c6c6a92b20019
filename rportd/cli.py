"""Command line: `rportd [-c FILE | --data-dir DIR]` runs the server, `rportd migrate` the schema.

Exit status 1 with one line on stderr for every configuration or database problem.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from . import __version__
from .config import Config, load_config
from .errors import ConfigError, StoreError
from .preflight import check_writable_file
from .store import open_store
from .store.migrate import migrate_down, migrate_up, status
from .transfer.command import add_tenant_command, run_tenant_command

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rportd", description="Multi-tenant rport server.")
    parser.add_argument("--version", action="version", version=f"rportd {__version__}")
    parser.add_argument("-c", "--config", help="TOML config file (rport's keys)")
    parser.add_argument("--data-dir", default="./rportd-data",
                        help="data directory for the embedded default (no -c)")
    sub = parser.add_subparsers(dest="command")
    migrate = sub.add_parser("migrate", help="apply the SQL migrations to [database]")
    migrate.add_argument("-c", "--config", dest="migrate_config", required=True)
    migrate.add_argument("--status", action="store_true", help="list applied and pending")
    migrate.add_argument("--down", type=int, metavar="N", help="revert the newest N migrations")
    add_tenant_command(sub)  # rportd tenant import|export (rportd/transfer/command.py)
    return parser


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
    if args.config:
        return load_config(args.config)
    from .bootstrap import embedded_config

    return embedded_config(Path(args.data_dir).resolve())


async def _migrate(args: argparse.Namespace) -> int:
    config = load_config(args.migrate_config)
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


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "migrate":
            return asyncio.run(_migrate(args))
        if args.command == "tenant":
            return run_tenant_command(args)
        config = _load(args)
        for warning in config.warnings:
            print(f"rportd: warning: {warning}", file=sys.stderr)
        _setup_logging(config)
        from .server import serve

        asyncio.run(serve(config))
    except ConfigError as exc:
        print(f"rportd: config error: {exc}", file=sys.stderr)
        return 1
    except StoreError as exc:
        print(f"rportd: database error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
