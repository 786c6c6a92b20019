"""API users: `auth` (one plaintext pair), `auth_file` (JSON list, bcrypt) or the user and group
tables (with tenants under multi-tenancy). The record is read on every request, so a changed
password, group or tenant, or a removed user, takes effect at once without a restart. Usernames
and tenants are compared exactly in Python after the SQL; password checks go through the API's
LoginGate (throttle, dummy bcrypt for unknown names, a password pool of its own)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..config import Config
from ..store import Store
from ..tenancy import normalize_tenant, same_identity
from .gate import LoginGate, LoginRefused
from .passwords import PasswordPool, is_bcrypt
from .throttle import ThrottlePolicy
from .watched_file import WatchedJsonFile

__all__ = ["User", "UserSource", "SingleUser", "FileUsers", "TableUsers", "users_from_config",
           "api_gate"]


@dataclass(frozen=True)
class User:
    username: str
    password: str  # as stored: plaintext or a bcrypt hash; never sent anywhere
    groups: tuple[str, ...]
    tenant: str


class UserSource:
    """Base: `get` reads the current record; `authenticate` checks a password against it."""

    def __init__(self, gate: LoginGate | None = None) -> None:
        self.gate = gate or LoginGate("api", ThrottlePolicy(), PasswordPool("api"))

    async def get(self, username: str) -> User | None:
        raise NotImplementedError

    async def all(self) -> list[User]:
        """Every user, for read-only sources' GET /users (tables list through user_admin)."""
        return []

    async def authenticate(self, username: str, password: str, address: str,
                           tenant: str | None = None) -> User | None:
        """The user when the password matches; None when not or unknown (after a dummy check
        of the same cost). With `tenant` (the request's subdomain), a user of any other tenant
        is unknown: the same dummy check, the same answer as a wrong password. Raises
        LoginRefused (429) or PoolBusy (503) without checking."""
        wait = self.gate.throttle.retry_after(username, address)
        if wait > 0:  # refused before any database lookup
            raise LoginRefused(wait)
        user = await self.get(username)
        if user is not None and tenant is not None and user.tenant != tenant:
            user = None
        ok = await self.gate.check(username, address, password,
                                   user.password if user else None)
        return user if ok else None


class SingleUser(UserSource):
    def __init__(self, auth: str, gate: LoginGate | None = None):
        super().__init__(gate)
        name, _, password = auth.partition(":")
        self._user = User(name, password, (), "")
        if is_bcrypt(password):
            self.gate.learn(password)
        else:
            self.gate.plaintext_only()

    async def get(self, username: str) -> User | None:
        return self._user if username == self._user.username else None

    async def all(self) -> list[User]:
        return [self._user]


def _groups(value: Any) -> tuple[str, ...]:
    """`"groups": "admin"` is one group, not five one-letter groups."""
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list) or not all(isinstance(g, str) for g in value):
        raise ValueError("groups must be a list of strings")
    return tuple(value)


def _user_list(entries: Any) -> dict[str, User]:
    if not isinstance(entries, list):
        raise ValueError("must be a JSON list of users")
    return {str(e["username"]): User(str(e["username"]), str(e["password"]),
                                     _groups(e.get("groups")), "")
            for e in entries}


class FileUsers(UserSource):
    """A JSON list of {"username", "password" (bcrypt), "groups"}, re-read when it changes."""

    def __init__(self, path: str, gate: LoginGate | None = None):
        super().__init__(gate)
        self._file: WatchedJsonFile[dict[str, User]] = WatchedJsonFile(
            path, _user_list, "[api] auth_file", {})

    async def load(self) -> None:
        await self._file.load()

    async def get(self, username: str) -> User | None:
        return (await self._file.current()).get(username)

    async def all(self) -> list[User]:
        return sorted((await self._file.current()).values(), key=lambda u: u.username)


class TableUsers(UserSource):
    """One query per lookup: the user row joined with the groups of their own tenant (rule 3)."""

    def __init__(self, store: Store, users: str, groups: str, multi_tenancy: bool,
                 gate: LoginGate | None = None):
        super().__init__(gate)
        self._store = store
        self._cached: dict[str, User | None] = {}
        self._version: int | None = None
        q = store.quote
        u_tenant, g_tenant = ((f"u.{q('tenant')}", f"g.{q('tenant')}") if multi_tenancy
                              else ("''", "''"))
        # The tenant is matched in Python (normalised, exact), not in the JOIN: a collation or a
        # stray blank must neither add another tenant's groups nor drop the user's own.
        self._select = (
            f"SELECT u.{q('username')}, u.{q('password')}, {u_tenant}, g.{q('username')}, "
            f"g.{q('group')}, {g_tenant} FROM {q(users)} u "
            f"LEFT JOIN {q(groups)} g ON g.{q('username')} = u.{q('username')} "
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
        rows = [row for row in await self._store.fetchall(self._select, (username,))
                if same_identity(row[0], username)]
        if not rows or len({(row[1], normalize_tenant(row[2])) for row in rows}) > 1:
            return None  # unknown, or the same name twice in an unchecked table: refuse
        tenant = normalize_tenant(rows[0][2])
        groups = tuple(sorted({str(row[4]) for row in rows
                               if row[4] is not None and same_identity(row[3], username)
                               and normalize_tenant(row[5]) == tenant}))
        return User(username, str(rows[0][1]), groups, tenant)


def api_gate(config: Config) -> LoginGate:
    """The API's gate: bans only (user, address) pairs, and a password pool of its own."""
    policy = ThrottlePolicy(max_failed_login=config.server.max_failed_login,
                            ban_time=float(config.server.ban_time), ban_addresses=False)
    return LoginGate("api", policy, PasswordPool("api", queue=64))


def users_from_config(config: Config, store: Store) -> UserSource | None:
    api = config.api
    gate = api_gate(config)
    if api.auth:
        return SingleUser(api.auth, gate)
    if api.auth_file:
        return FileUsers(api.auth_file, gate)
    if api.auth_user_table:
        return TableUsers(store, api.auth_user_table, api.auth_group_table,
                          config.server.multi_tenancy, gate)
    return None
