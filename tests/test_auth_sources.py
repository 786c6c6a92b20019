"""The small edges of the auth sources: a removed auth file stops its credentials, a string of
groups is one group, the first start never prints a password it did not store, passwords
bcrypt cannot hold are a 400, and unknown agent ids cost what known ones cost."""

from __future__ import annotations

import asyncio
import io
import json
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest

from rportd.auth.clients import FileClientAuth
from rportd.auth.passwords import _verify_blocking, hash_password
from rportd.auth.users import FileUsers
from rportd.bootstrap import create_first_credentials, embedded_config
from rportd.store import open_store
from rportd.store.migrate import migrate_up

from .api_world import World, build_world
from .helpers import http
from .test_auth_agent_ban import guess


async def test_a_deleted_client_auth_file_stops_its_credentials(tmp_path: Path) -> None:
    path = tmp_path / "clients.json"
    path.write_text(json.dumps({"c1": "secret-1"}))
    auth = FileClientAuth(str(path))
    await auth.load()
    assert await auth.authenticate("c1", "secret-1", "192.0.2.1") is not None
    path.unlink()
    deadline = time.monotonic() + 5
    while await auth.authenticate("c1", "secret-1", "192.0.2.1") is not None:
        assert time.monotonic() < deadline, "credentials of a deleted file still work"
        await asyncio.sleep(0.2)


async def test_a_string_of_groups_is_one_group(tmp_path: Path) -> None:
    path = tmp_path / "users.json"
    stored = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
    path.write_text(json.dumps([{"username": "ann", "password": stored, "groups": "admin"}]))
    users = FileUsers(str(path))
    await users.load()
    user = await users.get("ann")
    assert user is not None and user.groups == ("admin",)


async def test_first_start_prints_no_password_for_an_existing_client1(tmp_path: Path) -> None:
    config = embedded_config(tmp_path)
    store = await open_store(config.own_database)
    try:
        await migrate_up(store)
        await store.execute("INSERT INTO clients_auth (id, password, tenant) VALUES (?, ?, ?)",
                            ("client1", "operators-own-secret", "default"))
        out = io.StringIO()
        assert await create_first_credentials(config, store, out)
        assert "client1:" not in out.getvalue() and "already existed" in out.getvalue()
        row = await store.fetchone("SELECT password FROM clients_auth WHERE id = 'client1'")
        assert row == ("operators-own-secret",)
    finally:
        await store.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("sources")
    hashed = [(f"agent{i}", bcrypt.hashpw(b"right-pw", bcrypt.gensalt(10)).decode(), "J")
              for i in range(13)]
    seed = [("INSERT INTO users (username, password, tenant) VALUES (?, ?, ?)",
             [("alice", bcrypt.hashpw(b"alice-pw-1", bcrypt.gensalt(4)).decode(), "J")]),
            ("INSERT INTO clients_auth (id, password, tenant) VALUES (?, ?, ?)", hashed)]
    built = build_world(tmp, "sqlite", {"db_type": "sqlite", "db_name": str(tmp / "rportd.db")},
                        seed=seed, agents=())
    yield built
    built.stop()


@pytest.mark.parametrize("password", ["p" * 73 + "X", "é" * 40])
async def test_passwords_bcrypt_cannot_hold_work_exactly(world: World, password: str) -> None:
    """Over 72 bytes or with a NUL, bcrypt alone would drop or refuse part of the password:
    the whole password logs in, and what bcrypt would have kept of it does not."""
    body = json.dumps({"id": f"k{len(password)}", "password": password}).encode()
    answer = http(world.rportd.api_port, "POST", "/api/v1/clients-auth",
                  basic=("alice", "alice-pw-1"), body=body)
    assert answer.status == 201, answer.body
    auth_id = answer.json()["data"]["id"]
    truncated = password.encode()[:72].split(b"\x00")[0].decode("utf-8", "ignore")
    assert not await guess(world, f"127.0.7.{len(password)}", auth_id, [truncated])
    assert await guess(world, f"127.0.8.{len(password)}", auth_id, [password])


def test_a_password_with_nul_is_kept_whole() -> None:
    """SSH clients cannot send NUL (asyncssh refuses to), so this one is checked directly."""
    stored = hash_password("pass\x00word", rounds=4)
    assert _verify_blocking("pass\x00word", stored)
    assert not _verify_blocking("pass", stored) and not _verify_blocking("pass\x00", stored)


def test_a_lone_surrogate_password_is_a_400(world: World) -> None:
    body = b'{"id": "k8", "password": "abcdefgh\\ud800"}'
    answer = http(world.rportd.api_port, "POST", "/api/v1/clients-auth",
                  basic=("alice", "alice-pw-1"), body=body)
    assert answer.status == 400 and answer.error_code == "ERR_CODE_INVALID_REQUEST", answer.body


async def _agent_latency(world: World, source: str, auth_id: str) -> float:
    started = time.monotonic()
    assert not await guess(world, source, auth_id, ["wrong-password"])
    return time.monotonic() - started


async def _agent_medians(world: World, attempt: int) -> tuple[float, float]:
    unknown, known = [], []
    for i in range(12):  # one guess per address and id, alternating order: no throttle applies
        sides = [(unknown, f"127.{attempt}.5.{i + 1}", f"ghost{attempt}-{i}"),
                 (known, f"127.{attempt}.6.{i + 1}", f"agent{i}")]
        for samples, source, auth_id in sides if i % 2 else reversed(sides):
            samples.append(await _agent_latency(world, source, auth_id))
    return statistics.median(unknown), statistics.median(known)


async def test_unknown_agent_ids_cost_what_known_ones_cost(world: World) -> None:
    await _agent_latency(world, "127.0.4.250", "agent12")  # the hash cost is learned
    await _agent_latency(world, "127.0.4.251", "ghost-warmup")  # the dummy hash is made once
    for attempt in (1, 2):  # a second measurement if other work on the machine skewed the first
        medians = await _agent_medians(world, attempt)
        if (max(medians) - min(medians)) / max(medians) < 0.2:
            return
    raise AssertionError(f"unknown vs known-wrong medians differ by over 20 %: {medians}")
