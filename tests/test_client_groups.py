"""rport's group matching, exactly, and `clients_in_groups` (the command-target resolution) in a
real rportd runtime with real agents in two tenants, on SQLite and MariaDB."""

from __future__ import annotations

import asyncio
import fnmatch
import random
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from rportd.client_groups import (
    ClientGroupNotFound,
    ClientGroups,
    clients_in_groups,
    parse_group,
    pattern_matches,
)
from rportd.config import Config, load_config
from rportd.errors import BadRequest, Forbidden
from rportd.server import Runtime, prepare_database
from rportd.store import open_store
from rportd.store.base import Store
from rportd.tenancy import Scope

from .api_world import create_mysql_database, drop_mysql_database
from .conftest import MYSQL_HOST, MYSQL_PASSWORD, MYSQL_PORT, MYSQL_USER, require_mysql
from .helpers import free_port, write_config
from .processes import Agent

# ---------------------------------------------------------------- matching


@pytest.mark.parametrize("pattern, value, expected", [
    ("web-1", "WEB-1", True), ("web", "web-1", False), ("web-1", "web-10", False),
    ("web-*", "web-", True), ("*-1", "db-1", True), ("*", "", True), ("", "", True),
    ("a*a", "a", False), ("a*a", "aa", True), ("ab*ba", "aba", False), ("ab*ba", "abba", True),
    ("*ab*b", "abb", True), ("a*b*c", "abc", True), ("a*b*c", "acb", False),
    ("w?b", "web", False), ("w?b", "w?b", True), ("[w]eb", "web", False),
    ("[w]eb", "[W]EB", True), ("10.0.*.1", "10.0.12.1", True), ("**", "x", True),
    ("\u0130STANBUL", "istanbul", True),  # Go lowers U+0130 to a plain i
    ("\u03a3\u0391\u03a3", "\u03c3\u03b1\u03c3", True),  # rune by rune: no final sigma
    ("\u03a3\u0391\u03a3", "\u03c3\u03b1\u03c2", False),
])
def test_patterns_match_as_rport_does(pattern: str, value: str, expected: bool) -> None:
    assert pattern_matches(pattern, value) is expected


def test_patterns_agree_with_a_glob_of_only_stars() -> None:
    """Against fnmatch with every character but * escaped, on many random short strings."""
    rng = random.Random(9)
    for _ in range(20_000):
        pattern = "".join(rng.choice("ab*?[") for _ in range(rng.randint(0, 6)))
        value = "".join(rng.choice("abAB?[") for _ in range(rng.randint(0, 7)))
        glob = "*".join(re.sub(r"([?\[\]])", r"[\1]", piece) for piece in pattern.split("*"))
        expected = fnmatch.fnmatchcase(value.lower(), glob.lower())
        assert pattern_matches(pattern, value) is expected, (pattern, value)


# ---------------------------------------------------------------- resolution in a runtime

CREDENTIALS = {"cj": ("cj-secret", "J"), "cg": ("cg-secret", "G")}
AGENTS = (("x", "cj", "qa"), ("jonly", "cj", "prod"), ("x", "cg", "qa"), ("gonly", "cg", "qa"))
J, G, NOBODY = Scope("J"), Scope("G"), Scope("")


@dataclass
class World:
    runtime: Runtime
    store: Store
    agents: dict[tuple[str, str], Agent]

    @property
    def groups(self) -> ClientGroups:
        return self.runtime.groups


def _database(kind: str, tmp: Path) -> dict[str, object]:
    if kind == "sqlite":
        return {"db_type": "sqlite", "db_name": str(tmp / "rportd.db")}
    require_mysql().close()
    return {"db_type": "mysql", "db_host": f"{MYSQL_HOST}:{MYSQL_PORT}", "db_user": MYSQL_USER,
            "db_password": MYSQL_PASSWORD, "db_name": create_mysql_database()}


async def _start(tmp: Path, database: dict[str, object]) -> tuple[Runtime, Store]:
    (tmp / "data").mkdir()
    migrate = write_config(tmp / "migrate.conf", {"server": {"allow_root": True,
                                                             "data_dir": str(tmp / "data")},
                                                  "database": database})
    subprocess.run([sys.executable, "-m", "rportd.cli", "migrate", "-c", str(migrate)],
                   check=True, capture_output=True)
    config = load_config(write_config(tmp / "rportd.conf", {
        "server": {"address": f"127.0.0.1:{free_port()}", "data_dir": str(tmp / "data"),
                   "allow_root": True, "auth_table": "clients_auth", "multi_tenancy": True,
                   "keep_lost_clients": "1h"},
        "api": {"address": f"127.0.0.1:{free_port()}", "auth_user_table": "users",
                "auth_group_table": "groups"},
        "database": database}))
    store = await open_store(config.own_database)
    try:
        return await _run(config, store)
    except BaseException:
        await store.close()
        raise


async def _run(config: Config, store: Store) -> tuple[Runtime, Store]:
    for auth_id, (secret, tenant) in CREDENTIALS.items():
        await store.execute("INSERT INTO clients_auth (id, password, tenant) VALUES (?, ?, ?)",
                            (auth_id, secret, tenant))
    await prepare_database(config, store)
    runtime = Runtime(config, store)
    await runtime.load()
    runtime.bind()
    await runtime.start()
    return runtime, store


@pytest_asyncio.fixture(scope="module", loop_scope="module",
                        params=["sqlite", pytest.param("mysql", marks=pytest.mark.mysql)])
async def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
                ) -> AsyncIterator[World]:
    """One runtime per database for the module (agents take seconds to log in); each test
    uses its own group ids."""
    tmp_path = tmp_path_factory.mktemp(f"resolution-{request.param}")
    database = _database(request.param, tmp_path)
    runtime, store = await _start(tmp_path, database)
    built = World(runtime, store, {})
    try:
        address = runtime.config.server.address
        for client_id, auth_id, tag in AGENTS:
            built.agents[(client_id, auth_id)] = Agent(
                tmp_path, address, f"{auth_id}:{CREDENTIALS[auth_id][0]}", "--id", client_id,
                "--tag", tag, name=f"agent-{client_id}-{auth_id}").start()
        for agent in built.agents.values():
            await asyncio.to_thread(agent.wait_connected)
        yield built
    finally:
        for agent in built.agents.values():
            await asyncio.to_thread(agent.stop)
        await runtime.stop()
        await store.close()
        if request.param == "mysql":
            drop_mysql_database(str(database["db_name"]))


async def _make(world: World, scope: Scope, group_id: str, **params: list[str]) -> None:
    await world.groups.create(scope, parse_group({"id": group_id, "params": params}))


def _who(records: list[object]) -> list[tuple[str, str]]:
    return [(r.tenant, r.id) for r in records]  # type: ignore[attr-defined]


@pytest.mark.asyncio(loop_scope="module")
async def test_resolution_returns_only_the_callers_tenants_members(world: World) -> None:
    await _make(world, J, "qa", tag=["QA"])
    await _make(world, J, "all", client_id=["*"])
    await _make(world, G, "qa", tag=["*"])
    await _make(world, G, "g-all", client_id=["*"])
    assert _who(await clients_in_groups(world.groups, J, ["qa"])) == [("J", "x")]
    assert _who(await clients_in_groups(world.groups, J, ["all"])) == [("J", "jonly"), ("J", "x")]
    assert _who(await clients_in_groups(world.groups, J, ["qa", "all", "qa"])) == \
        [("J", "jonly"), ("J", "x")]  # each client once
    assert _who(await clients_in_groups(world.groups, G, ["qa"])) == [("G", "gonly"), ("G", "x")]
    assert await clients_in_groups(world.groups, J, []) == []
    records = await clients_in_groups(world.groups, J, ["all"])
    assert all(r.session is not None for r in records)  # live sessions, ready for commands


@pytest.mark.asyncio(loop_scope="module")
async def test_foreign_or_missing_groups_fail_alike(world: World) -> None:
    await _make(world, G, "gg", client_id=["*"])
    await _make(world, J, "mine", client_id=["*"])
    failures = []
    for ids in (["gg"], ["nope"], ["mine", "gg"], ["mine", "nope"]):
        with pytest.raises(ClientGroupNotFound) as caught:
            await clients_in_groups(world.groups, J, ids)
        failures.append((caught.value.status, caught.value.code, caught.value.detail))
        assert caught.value.group_id == ids[-1]
    assert len(set(failures)) == 1 and failures[0][:2] == (404, "ERR_CODE_CLIENT_GROUP_NOT_FOUND")
    with pytest.raises(ClientGroupNotFound):
        await clients_in_groups(world.groups, NOBODY, ["gg"])  # a user without a tenant
    with pytest.raises(Forbidden):
        await _make(world, NOBODY, "x", client_id=["*"])
    for bad in (["g" * 31], ["a b"], [7], ["g"] * 101):
        with pytest.raises(BadRequest) as refused:
            await clients_in_groups(world.groups, J, bad)  # type: ignore[arg-type]
        assert refused.value.code == "ERR_CODE_INVALID_CLIENT_GROUP_ID"


@pytest.mark.asyncio(loop_scope="module")
async def test_resolution_follows_connections(world: World) -> None:
    """Last in the module: it takes jonly away and brings it back."""
    await _make(world, J, "every", client_id=["*"])
    agent = world.agents[("jonly", "cj")]
    await asyncio.to_thread(agent.stop)
    async with asyncio.timeout(15):
        while world.runtime.registry.get(J, "jonly").connected:
            await asyncio.sleep(0.05)
    assert _who(await clients_in_groups(world.groups, J, ["every"])) == [("J", "x")]
    known = await clients_in_groups(world.groups, J, ["every"], connected_only=False)
    assert _who(known) == [("J", "jonly"), ("J", "x")]
    agent.start()
    await asyncio.to_thread(agent.wait_connected, 2)
    assert _who(await clients_in_groups(world.groups, J, ["every"])) == \
        [("J", "jonly"), ("J", "x")]
