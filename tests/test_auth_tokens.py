"""Tokens bound to the account: a re-created username or a changed password ends them; expired
revocations are pruned; a short or empty JWT secret refuses the start."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rportd.auth.tokens import TokenClaims, TokenIssuer
from rportd.config import DatabaseConfig
from rportd.store import open_store
from rportd.store.migrate import migrate_up

from .api_world import World, _hash, build_world
from .helpers import http, run_rportd, write_config
from .test_config import assert_refused, merged


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("tokens")
    built = build_world(tmp, "sqlite", {"db_type": "sqlite", "db_name": str(tmp / "rportd.db")},
                        agents=())
    yield built
    built.stop()


def token_for(world: World, user: str, password: str) -> str:
    answer = http(world.rportd.api_port, "GET", "/api/v1/login", basic=(user, password))
    assert answer.status == 200, answer.body
    return str(answer.json()["data"]["token"])


def me(world: World, token: str) -> tuple[int, object]:
    answer = http(world.rportd.api_port, "GET", "/api/v1/me", token=token)
    return answer.status, answer.json().get("data") or answer.json()["errors"][0]["code"]


def test_a_recreated_username_does_not_inherit_the_old_token(world: World) -> None:
    stored = _hash("bob-pw-1")
    world.sql("INSERT INTO users (username, password, tenant) VALUES (?, ?, ?)",
              ("bob", stored, "J"))
    token = token_for(world, "bob", "bob-pw-1")
    assert me(world, token)[0] == 200
    world.sql("DELETE FROM users WHERE username = ?", ("bob",))
    # the very same row values but in another tenant: only the tenant tells them apart
    world.sql("INSERT INTO users (username, password, tenant) VALUES (?, ?, ?)",
              ("bob", stored, "G"))
    assert me(world, token) == (401, "ERR_CODE_INVALID_TOKEN")
    assert me(world, token_for(world, "bob", "bob-pw-1"))[1]["tenant"] == "G"  # type: ignore[index]


def test_a_password_change_ends_existing_tokens(world: World) -> None:
    world.sql("INSERT INTO users (username, password, tenant) VALUES (?, ?, ?)",
              ("carl", _hash("carl-pw-1"), "J"))
    token = token_for(world, "carl", "carl-pw-1")
    assert me(world, token)[0] == 200
    world.sql("UPDATE users SET password = ? WHERE username = ?", (_hash("carl-pw-2"), "carl"))
    assert me(world, token) == (401, "ERR_CODE_INVALID_TOKEN")
    assert me(world, token_for(world, "carl", "carl-pw-2"))[0] == 200


async def test_expired_revocations_are_pruned_from_memory_and_table(tmp_path: Path) -> None:
    store = await open_store(DatabaseConfig("sqlite", "", "", "", str(tmp_path / "t.db")))
    try:
        await migrate_up(store)
        tokens = TokenIssuer(b"k" * 32, store)
        now = int(time.time())
        await tokens.revoke(TokenClaims("a", "old", now - 1))
        await tokens.revoke(TokenClaims("a", "live", now + 600))
        assert await tokens.prune() == 1 and tokens.revocations == 1
        rows = await store.fetchall("SELECT jti FROM api_token_revocations")
        assert rows == [("live",)]
    finally:
        await store.close()


@pytest.mark.parametrize("secret", ["x", "s" * 31])
def test_a_short_configured_jwt_secret_refuses_the_start(tmp_path: Path, secret: str) -> None:
    path = write_config(tmp_path / "rportd.conf", merged(tmp_path, {"api": {"jwt_secret": secret}}))
    assert_refused(run_rportd(["-c", str(path)], cwd=tmp_path), "[api] jwt_secret", "32 bytes")


@pytest.mark.parametrize("content", [b"", b"\n", b"short\n"])
def test_a_short_generated_jwt_secret_file_refuses_the_start(tmp_path: Path,
                                                             content: bytes) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "jwt_secret").write_bytes(content)
    path = write_config(tmp_path / "rportd.conf", merged(tmp_path, {}))
    assert_refused(run_rportd(["-c", str(path)], cwd=tmp_path), "[api] jwt_secret", "jwt_secret")
