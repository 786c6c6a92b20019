"""API users: `auth` (one plaintext pair), `auth_file` (JSON list, bcrypt) or the user and group
tables (with tenants under multi-tenancy). The record is read on every request, so a changed
password, group or tenant, or a removed user, takes effect at once without a restart."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..config import Config
from ..store import Store
from ..tenancy import normalize_tenant
from .passwords import VerifyCache
from .watched_file import WatchedJsonFile

__all__ = ["User", "UserSource", "SingleUser", "FileUsers", "TableUsers", "users_from_config"]


@dataclass(frozen=True)
class User:
    username: str
    password: str  # as stored: plaintext or a bcrypt hash; never sent anywhere
    groups: tuple[str, ...]
    tenant: str


class UserSource:
    """Base: `get` reads the current record; `authenticate` checks a password against it."""

    def __init__(self) -> None:
        self._cache = VerifyCache()

    async def get(self, username: str) -> User | None:
        raise NotImplementedError

    async def authenticate(self, username: str, password: str) -> User | None:
        user = await self.get(username)
        if user is None or not await self._cache.verify(password, user.password):
            return None
        return user


class SingleUser(UserSource):
    def __init__(self, auth: str):
        super().__init__()
        name, _, password = auth.partition(":")
        self._user = User(name, password, (), "")

    async def get(self, username: str) -> User | None:
        return self._user if username == self._user.username else None


def _user_list(entries: Any) -> dict[str, User]:
    if not isinstance(entries, list):
        raise ValueError("must be a JSON list of users")
    return {str(e["username"]): User(str(e["username"]), str(e["password"]),
                                     tuple(str(g) for g in e.get("groups", [])), "")
            for e in entries}


class FileUsers(UserSource):
    """A JSON list of {"username", "password" (bcrypt), "groups"}, re-read when it changes."""

    def __init__(self, path: str):
        super().__init__()
        self._file: WatchedJsonFile[dict[str, User]] = WatchedJsonFile(
            path, _user_list, "[api] auth_file", {})

    async def load(self) -> None:
        await self._file.load()

    async def get(self, username: str) -> User | None:
        return (await self._file.current()).get(username)


class TableUsers(UserSource):
    """One query per lookup: the user row joined with the groups of their own tenant (rule 3)."""

    def __init__(self, store: Store, users: str, groups: str, multi_tenancy: bool):
        super().__init__()
        self._store = store
        self._cached: dict[str, User | None] = {}
        self._version: int | None = None
        q = store.quote
        if multi_tenancy:
            tenant, join_tenant = f"u.{q('tenant')}", f" AND g.{q('tenant')} = u.{q('tenant')}"
        else:
            tenant, join_tenant = "''", ""
        self._select = (
            f"SELECT u.{q('password')}, {tenant}, g.{q('group')} FROM {q(users)} u "
            f"LEFT JOIN {q(groups)} g ON g.{q('username')} = u.{q('username')}{join_tenant} "
            f"WHERE u.{q('username')} = ?")

    async def get(self, username: str) -> User | None:
        """Served from memory while the database reports no commit since it was read (SQLite's
        data_version); any change anywhere in the database drops every cached user."""
        version = self._store.data_version()
        if version is None or version != self._version:
            self._cached.clear()
            self._version = version
        elif username in self._cached:
            return self._cached[username]
        user = await self._read(username)
        if version is not None and len(self._cached) < 10_000:
            self._cached[username] = user
        return user

    async def _read(self, username: str) -> User | None:
        rows = await self._store.fetchall(self._select, (username,))
        if not rows or len({(row[0], normalize_tenant(row[1])) for row in rows}) > 1:
            return None  # unknown, or the same name twice in an unchecked table: refuse
        groups = tuple(sorted({str(row[2]) for row in rows if row[2] is not None}))
        return User(username, str(rows[0][0]), groups, normalize_tenant(rows[0][1]))


def users_from_config(config: Config, store: Store) -> UserSource | None:
    api = config.api
    if api.auth:
        return SingleUser(api.auth)
    if api.auth_file:
        return FileUsers(api.auth_file)
    if api.auth_user_table:
        return TableUsers(store, api.auth_user_table, api.auth_group_table,
                          config.server.multi_tenancy)
    return None
