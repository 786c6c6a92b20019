"""`rportd tenant import|export`: the operator's commands for moving tenants.

Exit status 0 when done, 1 when refused (conflicts, another host key, a bad archive, a running
rportd), with every reason on stderr. Progress and the summary go to stderr as well.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import socket
import sys
from pathlib import Path
from typing import Any

from .. import __version__
from ..auth.tokens import secret_id, stored_secret
from ..config import Config, DatabaseConfig, load_config, validate_identifier
from ..errors import BadRequest, TransferRefused
from ..registry import utcnow_iso
from ..store import Store, open_store
from ..tenancy import normalize_tenant
from ..tenants import check_name
from ..wire.hostkey import derive_key_from_seed, fingerprint
from .archive import Archive, decode_archive, read_archive, write_archive
from .rport_import import read_api_auth_file, read_auth_tables, read_clients_auth_file, read_data_dir
from .tenant_io import Plan, delete_tenant, export_tenant, hash_plaintext_rows, import_archive

__all__ = ["add_tenant_command", "run_tenant_command"]


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def add_tenant_command(sub: Any) -> None:
    """Register `tenant import` and `tenant export` on the top-level subparsers."""
    tenant = sub.add_parser("tenant", help="move tenants in and out (import, export)")
    verbs = tenant.add_subparsers(dest="tenant_command", required=True)
    _import_parser(verbs.add_parser("import", help="import an rport server or a tenant archive"))
    _export_parser(verbs.add_parser("export", help="write a tenant's archive"))


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", dest="tenant_config", required=True, metavar="FILE",
                        help="this rportd's TOML config")
    parser.add_argument("--tenant", required=True, help="the tenant's name")
    parser.add_argument("--hash-plaintext", action="store_true",
                        help="store plaintext client credential passwords as bcrypt hashes")


def _import_parser(parser: argparse.ArgumentParser) -> None:
    _common(parser)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--from-rport", metavar="DATA_DIR", help="an rport server's data_dir")
    source.add_argument("--from-export", metavar="FILE", help="an archive of rportd tenant export")
    auth = parser.add_mutually_exclusive_group()
    auth.add_argument("--clients-auth-file", metavar="F", help="rport's [server] auth_file")
    auth.add_argument("--clients-auth-table", metavar="TABLE",
                      help="rport's [server] auth_table, in --rport-db")
    auth.add_argument("--clients-auth", metavar="ID:PASSWORD", help="rport's [server] auth")
    parser.add_argument("--api-auth-file", metavar="F", help="rport's [api] auth_file")
    parser.add_argument("--api-auth-user-table", metavar="TABLE", help="in --rport-db")
    parser.add_argument("--api-auth-group-table", metavar="TABLE", help="in --rport-db")
    parser.add_argument("--rport-db", metavar="DSN",
                        help="rport's [database]: sqlite:PATH or mysql://USER:PASS@HOST:PORT/DB")
    parser.add_argument("--rport-key-seed", metavar="SEED",
                        help="rport's [server] key_seed: its agents' fingerprint is checked")
    parser.add_argument("--dry-run", action="store_true",
                        help="list what would move and every conflict; change nothing")
    parser.add_argument("--accept-new-fingerprint", action="store_true",
                        help="finish even though this server's host key differs")


def _export_parser(parser: argparse.ArgumentParser) -> None:
    _common(parser)
    parser.add_argument("--out", required=True, metavar="FILE", help="the archive to write")
    parser.add_argument("--then-delete", action="store_true",
                        help="remove the tenant here once the archive is written and verified")


def run_tenant_command(args: argparse.Namespace) -> int:
    try:
        args.tenant = normalize_tenant(args.tenant)
        if not args.tenant:
            raise TransferRefused("--tenant needs a name: a blank tenant is no tenant")
        if args.tenant_command == "import":
            return asyncio.run(_import(args))
        return asyncio.run(_export(args))
    except TransferRefused as exc:
        _say(f"rportd: refused: {exc.detail}")
        for reason in exc.reasons:
            _say(f"  - {reason}")
        return 1


# ------------------------------------------------------------------ shared checks
def _config(args: argparse.Namespace) -> Config:
    """The -c file, under the setting flags given before `tenant` (flag > env > file)."""
    return load_config(args.tenant_config, flags=getattr(args, "setting_flags", None) or {})


def _serving(config: Config) -> bool:
    """Whether something answers on this server's agent port (a running rportd)."""
    host, _, port = config.server.address.rpartition(":")
    host = host.strip("[]")
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            return True
    except (OSError, ValueError):
        return False


def _refuse_if_running(config: Config, what: str) -> None:
    if _serving(config):
        raise TransferRefused(
            f"something answers on [server] address {config.server.address} (a running "
            f"rportd?); stop it before {what} (rportd keeps the client registry in memory and "
            "would overwrite the change), then start it again")


def server_fingerprint(config: Config) -> str:
    """The fingerprint this server's agents see; '' when no key exists yet."""
    if config.server.key_seed:
        return fingerprint(derive_key_from_seed(config.server.key_seed))
    path = config.server.data_dir / "rportd_host_key"
    if not path.exists():
        return ""
    import asyncssh

    return fingerprint(asyncssh.read_private_key(str(path)))


def _check_fingerprint(config: Config, expected: str, accept: bool) -> str | None:
    """None when agents keep working (or the operator accepted); else the refusal."""
    actual = server_fingerprint(config)
    if not expected or expected == actual or accept:
        return None
    now = actual or "none yet (a new key will be generated at the first start)"
    return (f"the imported agents expect host key fingerprint {expected}; this server's is "
            f"{now}. Fix: set [server] key_seed to the source server's key_seed (same seed, "
            "same key), or copy the source's data_dir/rportd_host_key here; or pass "
            "--accept-new-fingerprint and update the agents' fingerprint")


def server_secret_id(config: Config) -> str:
    """Which `[api] jwt_secret` this server's personal tokens are bound to; '' when none yet."""
    secret = stored_secret(config.api.jwt_secret, config.server.data_dir)
    return secret_id(secret) if secret else ""


def _token_note(config: Config, archive: Archive) -> str | None:
    """Personal tokens are bound to their owner's account through the server's jwt_secret
    (auth/personal_tokens.py): they verify after a move only on the same secret and tenant."""
    count = len(archive.rows.get("api_tokens", []))
    expected = str(archive.meta.get("jwt_secret_id") or "")
    if not count:
        return None
    if not config.server.multi_tenancy:
        why = "a token is bound to its owner's tenant, and this server has no tenants"
    elif not expected or expected != server_secret_id(config):
        why = "this server's [api] jwt_secret is not the source's"
    else:
        return None
    return (f"api_tokens: {count} personal token{'' if count == 1 else 's'} will not verify "
            f"here: {why}; to keep them, set [api] jwt_secret to the source's before rportd "
            "starts, else their owners create new ones")


# One import is one transaction, and the store's deadline covers a whole transaction: a move of
# many rows needs longer than a request does.
TRANSFER_TIMEOUT = 900.0


async def _opened(config: Config) -> Store:
    database = config.own_database
    return await open_store(dataclasses.replace(
        database, db_timeout=max(database.db_timeout, TRANSFER_TIMEOUT)))


# ------------------------------------------------------------------ import
def _dsn(dsn: str, timeout: float) -> DatabaseConfig:
    if dsn.startswith("sqlite:"):
        return DatabaseConfig("sqlite", "", "", "", dsn.removeprefix("sqlite:"), timeout)
    if dsn.startswith("mysql://"):
        from urllib.parse import unquote, urlsplit

        url = urlsplit(dsn)
        host = f"{url.hostname or '127.0.0.1'}:{url.port or 3306}"
        return DatabaseConfig("mysql", host, unquote(url.username or ""),
                              unquote(url.password or ""), url.path.lstrip("/"), timeout)
    scheme = dsn.partition(":")[0][:20]  # never the rest: it may hold the password
    raise TransferRefused(f"--rport-db: {scheme!r} is not a database this reads; use "
                          "sqlite:PATH or mysql://USER:PASS@HOST/DB")


async def _rport_tables(args: argparse.Namespace, timeout: float) -> dict[str, list[dict[str,
                                                                                         object]]]:
    names = {"--clients-auth-table": args.clients_auth_table or "",
             "--api-auth-user-table": args.api_auth_user_table or "",
             "--api-auth-group-table": args.api_auth_group_table or ""}
    if not any(names.values()):
        return {}
    if not args.rport_db:
        raise TransferRefused("rport's auth tables need --rport-db (rport's [database])")
    for option, name in names.items():
        if name:
            validate_identifier(name, option)
    store = await open_store(_dsn(args.rport_db, timeout))
    try:
        return await read_auth_tables(store, *names.values())
    finally:
        await store.close()


async def _from_rport(args: argparse.Namespace, config: Config) -> Archive:
    rows, notes = await asyncio.to_thread(read_data_dir, Path(args.from_rport))
    if args.clients_auth_file:
        rows["credentials"] = read_clients_auth_file(Path(args.clients_auth_file))
    elif args.clients_auth:
        auth_id, _, password = args.clients_auth.partition(":")
        rows["credentials"] = [{"id": auth_id, "password": password}]
    if args.api_auth_file:
        rows["users"], rows["user_groups"] = read_api_auth_file(Path(args.api_auth_file))
    rows.update(await _rport_tables(args, config.database.db_timeout))
    for note in notes:
        _say(f"note: {note}")
    seed = args.rport_key_seed
    expected = fingerprint(derive_key_from_seed(seed)) if seed else ""
    return Archive(args.tenant, rows, {"source": f"rport data_dir {args.from_rport}",
                                       "host_key_fingerprint": expected})


def _check_import_name(config: Config, name: str) -> None:
    """The names the operator API takes (tenants.check_name): an imported tenant must be one it
    can suspend and remove, and fit the tenant columns. Exports take any name, to move out what
    an operator's own tables named."""
    if not config.server.multi_tenancy:
        return
    try:
        check_name(name, dns_label=bool(config.api.tenant_domain))
    except BadRequest as exc:
        raise TransferRefused(f"--tenant {name[:60]!r}: {exc.detail}; nothing was changed") from None


async def _import(args: argparse.Namespace) -> int:
    config = _config(args)
    _check_import_name(config, args.tenant)
    if not args.dry_run:
        _refuse_if_running(config, "importing")
    archive = (await asyncio.to_thread(read_archive, Path(args.from_export))
               if args.from_export else None)
    store = await _opened(config)
    try:
        if archive is None:
            archive = await _from_rport(args, config)
        refusal = _check_fingerprint(config, archive.fingerprint, args.accept_new_fingerprint)
        if refusal and not args.dry_run:
            raise TransferRefused("the host key differs; nothing was changed", [refusal])
        plan = await _planned(store, config, archive, args, refusal)
    finally:
        await store.close()
    token_note = _token_note(config, archive)
    for note in [*plan.notes, *([token_note] if token_note else [])]:
        _say(f"note: {note}")
    if refusal:  # a dry run: everything else would move
        raise TransferRefused(f"dry run: the import would be refused; it would move "
                              f"{plan.summary()}", [refusal])
    _say(f"{'would import' if args.dry_run else 'imported'} {plan.summary()}")
    if not args.dry_run:
        _say("start (or restart) rportd to serve the imported clients")
    return 0


async def _planned(store: Store, config: Config, archive: Archive, args: argparse.Namespace,
                   refusal: str | None) -> Plan:
    """The import (or its dry run); a dry run's refusal lists the host key beside conflicts."""
    try:
        return await import_archive(store, config, archive, name=args.tenant,
                                    dry_run=args.dry_run, hash_plaintext=args.hash_plaintext,
                                    progress=_say)
    except TransferRefused as exc:
        if refusal:
            exc.reasons.append(refusal)
        raise


# ------------------------------------------------------------------ export
async def _export(args: argparse.Namespace) -> int:
    config = _config(args)
    if args.then_delete:
        _refuse_if_running(config, "deleting a tenant")
    store = await _opened(config)
    try:
        archive = await export_tenant(store, config, args.tenant, progress=_say)
        if not any(archive.counts().values()):
            raise TransferRefused(f"this server has nothing of tenant {args.tenant!r}; no "
                                  "archive written")
        if args.hash_plaintext:
            await hash_plaintext_rows(archive)
        archive.meta.update(created_at=utcnow_iso(), rportd_version=__version__,
                            source="rportd", host_key_fingerprint=server_fingerprint(config),
                            jwt_secret_id=server_secret_id(config))
        out = Path(args.out)
        checksum = await asyncio.to_thread(write_archive, out, archive)
        _say(f"wrote {out} (sha256 {checksum}): " + ", ".join(
            f"{kind} {n}" for kind, n in archive.counts().items() if n))
        if args.then_delete:
            await _verify_then_delete(store, config, archive, out)
    finally:
        await store.close()
    return 0


async def _verify_then_delete(store: Store, config: Config, archive: Archive, out: Path) -> None:
    """Re-read the archive from disk; only when it verifies and holds exactly what was exported
    is the tenant removed here."""
    written = decode_archive(await asyncio.to_thread(out.read_bytes), str(out))
    if written.rows != archive.rows:
        raise TransferRefused(f"{out} does not hold what was exported; the tenant is kept")
    deleted = await delete_tenant(store, config, archive.tenant, progress=_say)
    _say(f"deleted tenant {archive.tenant!r} here: {deleted} rows (archive verified)")
