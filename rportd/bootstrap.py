"""The embedded default: a ready-to-try config on SQLite in a data directory, with first-run
credentials created once, printed once, and kept across restarts."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from .auth.passwords import hash_password, random_password
from .config import Config, build_config
from .store import Store

__all__ = ["embedded_config", "create_first_credentials", "DEFAULT_TENANT"]

DEFAULT_TENANT = "default"


def embedded_config(data_dir: Path,
                    flags: Mapping[tuple[str, str], Any] | None = None) -> Config:
    """rportd with no -c: SQLite in data_dir, API on 127.0.0.1:3000, agents on 0.0.0.0:8080
    (`flags`: the logging flags given with it)."""
    document: dict[str, Any] = {
        "server": {
            "address": "0.0.0.0:8080",
            "data_dir": str(data_dir),
            "auth_table": "clients_auth",
            "multi_tenancy": True,
        },
        "api": {
            "address": "127.0.0.1:3000",
            "auth_user_table": "users",
            "auth_group_table": "groups",
        },
        "database": {"db_type": "sqlite", "db_name": str(data_dir / "rportd.db")},
    }
    return build_config(document, embedded=True, flags=flags)


async def create_first_credentials(config: Config, store: Store, out: TextIO = sys.stdout) -> bool:
    """On an empty database, create user `admin` and client credential `client1` in tenant
    `default`, and print them with commands to try. Returns whether anything was created."""
    users = config.api.auth_user_table
    if await store.fetchone(f"SELECT 1 FROM {store.quote(users)} LIMIT 1"):
        return False
    user_password, client_password = random_password(), random_password()
    user_hash = await asyncio.to_thread(hash_password, user_password)
    client_hash = await asyncio.to_thread(hash_password, client_password)
    q = store.quote
    async with store.transaction() as tx:
        await tx.execute(f"INSERT INTO {q(users)} (username, password, tenant) VALUES (?, ?, ?)",
                         ("admin", user_hash, DEFAULT_TENANT))
        await tx.execute(f"INSERT INTO {q(config.api.auth_group_table)} "
                         f"(username, {q('group')}, tenant) VALUES (?, ?, ?)",
                         ("admin", "Administrators", DEFAULT_TENANT))
        # Only a password we really stored may be printed: an existing client1 keeps its own.
        created_client = await tx.execute(
            f"INSERT INTO {q(config.server.auth_table)} (id, password, tenant) "
            "VALUES (?, ?, ?) ON CONFLICT(id) DO NOTHING", ("client1", client_hash, DEFAULT_TENANT))
    _print_first_run(config, out, user_password, client_password if created_client else None)
    return True


def _print_first_run(config: Config, out: TextIO, user_password: str,
                     client_password: str | None) -> None:
    api = config.api.address
    agent_port = config.server.address.rpartition(":")[2]
    client_line = (f"  client credential: client1:{client_password}\n" if client_password else
                   "  client credential: client1 already existed; its password is unchanged\n")
    try_agent = (f"  rport --auth client1:{client_password} 127.0.0.1:{agent_port}\n"
                 if client_password else "")
    out.write(
        "\nrportd: first start, credentials created (shown only this once, stored hashed in "
        f"{config.database.db_name}):\n"
        f"  API user:          admin:{user_password}   (tenant {DEFAULT_TENANT})\n"
        f"{client_line}\n"
        "Try:\n"
        f"  curl -s -u admin:{user_password} http://{api}/api/v1/clients\n"
        f"{try_agent}\n")
    out.flush()
